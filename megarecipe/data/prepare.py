"""Inputs -> a data dir: the tokenizer, train.bin/.idx and val.bin/.idx (Megatron indexed datasets), meta.json last.

A document is one record (a JSON line, a table row), one text file, or, for a text file over readers.BLOCK_CHARS
characters, one block of consecutive paragraphs (so a single-file corpus still splits). Documents are ordered
by the sha256 of their text (of their tokens, for Megatron input); repeats are dropped; the first documents, until
`val_tokens` is reached, form the validation split and the rest the training split. So the split depends on
neither input order, nor sharding, nor the number of workers, nor any seed; the two splits never share a
document; and any prefix of the training split mixes all sources. Each document ends with EOS."""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np

from megarecipe.data.encode import SHOW_BAD, SPOOL, encode_part, megatron_part, read_part
from megarecipe.data.errors import DataError
from megarecipe.data.indexed import write_index
from megarecipe.data.meta import (
    DATA_FILES,
    TRAIN,
    TRAIN_IDX,
    VAL,
    VAL_IDX,
    DataMeta,
    contents_sha256,
    dtype_for,
    load_meta,
    write_meta,
)
from megarecipe.data.readers import chunks, expand_inputs, record_name, records
from megarecipe.data.tokenizer import file_sha256, load_tokenizer, train_tokenizer

SHOW_PROGRESS_BYTES = 8 << 20
IN_PROCESS_BYTES = 4 << 20  # below this, starting worker processes costs more than it saves
DEAL_BYTES = 64 << 20  # a file this big is shared out among the shards by chunks, not given to one


class BadRecords(DataError):
    """Bad records in the input: the message's first line counts them, one line names each of the first few."""


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def prepare(
    inputs,
    out_dir,
    vocab_size=8000,
    val_tokens=200_000,
    tokenizer=None,
    progress=None,
    workers=None,
    fmt=None,
    text_key="text",
    skip_bad=False,
    eos=None,
    megatron=None,
    shard=None,
):
    """Tokenize `inputs` (files, folders, globs) or a Megatron prefix into `out_dir`; return the checked DataMeta.

    Everything is built in a sibling folder that replaces out_dir only once it is complete, so a failed or
    interrupted prepare leaves an existing data dir as it was.
    tokenizer: a sentencepiece .model, a tokenizer.json or a Hugging Face tokenizer folder (copied into out_dir)
      instead of training a sentencepiece BPE of `vocab_size`; eos: the token appended after each document.
    shard: (i, n) writes only part i of n into OUT.parts/ for join_parts (see deal); returns its record.
    progress: lines on stderr; None = only for inputs over 8 MB."""
    if val_tokens < 0:
        raise DataError(f"--val-tokens {val_tokens} must be >= 0")
    small = workers is None  # by default, small inputs are tokenized in this process
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise DataError(f"--workers {workers} must be >= 1")
    final = os.path.realpath(out_dir)
    if shard is None:
        _check_replaceable(out_dir, final)
    if megatron is not None:
        if tokenizer is None:
            raise DataError(
                "--megatron needs --tokenizer: the tokenizer the .bin was made with (for its vocabulary, "
                "EOS and the export)"
            )
        sources = []
    else:
        sources = expand_inputs(inputs, fmt)
    total = sum(s.bytes for s in sources) if megatron is None else _size(megatron + ".bin")
    show = progress if progress is not None else total >= SHOW_PROGRESS_BYTES
    if shard is not None:
        return _prepare_shard(sources, final, shard, tokenizer, eos, text_key, workers, show)
    build = f"{final}.tmp{os.getpid()}"
    shutil.rmtree(build, ignore_errors=True)
    os.makedirs(build)
    try:
        tok = _tokenizer(sources, build, vocab_size, tokenizer, eos, text_key, show)
        part = os.path.join(build, ".part")
        os.makedirs(part)
        identity = _identity(sources, tok, text_key, (0, 1))
        if megatron is not None:
            megatron_part(megatron, part, tok, show, identity)
        else:
            few = small and total < IN_PROCESS_BYTES
            encode_part(sources, part, tok, text_key, 1 if few else workers, show, identity)
        _join([part], build, tok, val_tokens, skip_bad)
        shutil.rmtree(part)
        _replace_dir(build, final)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return load_meta(out_dir)


def _size(path):
    return os.path.getsize(path) if os.path.isfile(path) else 0


def parts_dir(out_dir) -> str:
    return os.path.realpath(out_dir) + ".parts"


def _prepare_shard(sources, final, shard, tokenizer, eos, text_key, workers, show) -> dict:
    i, n = shard
    if not 0 <= i < n:
        raise DataError(f"--shard {i}/{n}: give I/N with 0 <= I < N")
    if tokenizer is None:
        raise DataError(
            "--shard needs --tokenizer: every shard must use the same one (train it first, e.g. a "
            "prepare of a sample of the corpus, and pass its DIR/tokenizer.model)"
        )
    tok = load_tokenizer(tokenizer, eos)
    identity = _identity(sources, tok, text_key, (i, n))
    mine, dealt = deal(sources, i, n)
    where = os.path.join(parts_dir(final), f"{i}-of-{n}")
    build = f"{where}.tmp{os.getpid()}"
    shutil.rmtree(build, ignore_errors=True)
    os.makedirs(build)
    try:
        tok_copy = load_tokenizer(tok.save(build), tok.eos_token)
        record = encode_part(mine, build, tok_copy, text_key, workers, show, identity, dealt)
        shutil.rmtree(where, ignore_errors=True)
        os.replace(build, where)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return record


def deal(sources, i, n) -> tuple[list, dict]:
    """Shard i's sources of n, and {source index: (i, n)} for those it shares with the others. Files go whole to
    shards in turn; a file over DEAL_BYTES, or every file when there are fewer than shards, is read by every shard,
    each tokenizing every n-th chunk of it. Either way a document keeps its record number, so the join is one pass."""
    shared = {s.index for s in sources if s.bytes >= DEAL_BYTES or len(sources) < n}
    mine = [s for s in sources if s.index in shared or s.index % n == i]
    return mine, {k: (i, n) for k in shared}


def join_parts(parts_folder, out_dir, val_tokens=200_000, skip_bad=False) -> DataMeta:
    """The data dir of all N parts in parts_folder (written by --shard I/N): the same bytes as one pass."""
    parts_folder = os.path.realpath(parts_folder)
    names = sorted(os.listdir(parts_folder)) if os.path.isdir(parts_folder) else []
    names = [x for x in names if "-of-" in x and ".tmp" not in x]
    if not names:
        raise DataError(f"--join {parts_folder}: no finished shards here; run prepare_data.py --shard I/N first")
    n = int(names[0].split("-of-")[1])
    missing = sorted(set(range(n)) - {int(x.split("-of-")[0]) for x in names if x.endswith(f"-of-{n}")})
    if missing or len(names) != n:
        raise DataError(
            f"--join {parts_folder}: shards {missing or names} missing or of another N; run every "
            f"--shard I/{n} (I = 0..{n - 1}) and nothing else into this folder"
        )
    parts = [os.path.join(parts_folder, f"{i}-of-{n}") for i in range(n)]
    first = read_part(parts[0])[0]
    for p in parts[1:]:
        rec = read_part(p)[0]
        differ = [k for k in ("inputs", "tokenizer_sha256", "eos_id", "text_key", "dtype") if rec[k] != first[k]]
        if differ:
            raise DataError(
                f"--join: {p} was made with another {', '.join(differ)} than {parts[0]}; run every "
                f"shard with the same --input, --tokenizer, --eos and --text-key"
            )
    final = os.path.realpath(out_dir)
    _check_replaceable(out_dir, final)
    build = f"{final}.tmp{os.getpid()}"
    shutil.rmtree(build, ignore_errors=True)
    os.makedirs(build)
    try:
        tok = load_tokenizer(parts[0])
        tok = load_tokenizer(tok.save(build), tok.eos_token)
        _join(parts, build, tok, val_tokens, skip_bad)
        _replace_dir(build, final)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return load_meta(out_dir)


def _identity(sources, tok, text_key, shard) -> dict:
    """What every shard of one prepare must share."""
    return {
        "inputs": [[s.name, s.format, s.bytes] for s in sources],
        "tokenizer_sha256": file_sha256(tok.path),
        "eos_id": tok.eos_id,
        "text_key": text_key,
        "dtype": dtype_for(tok.vocab_size),
        "shard": list(shard),
    }


def _check_replaceable(out_dir, final):
    """out_dir is replaced whole: refuse one that holds anything a data dir does not."""
    if os.path.exists(final) and not os.path.isdir(final):
        raise DataError(f"--out {out_dir} is a file; give a new folder or a data dir")
    foreign = sorted(set(os.listdir(final)) - DATA_FILES) if os.path.isdir(final) else []
    if foreign:
        raise DataError(
            f"--out {out_dir} holds {len(foreign)} file(s) that are not a data dir's (e.g. {foreign[0]}) "
            f"and would be replaced; give a new folder or an existing data dir"
        )


def _replace_dir(build, final):
    """Two renames: the old dir stays whole under .old until the new one has its name."""
    old = f"{final}.old{os.getpid()}"
    if os.path.isdir(final):
        os.replace(final, old)
    os.replace(build, final)
    shutil.rmtree(old, ignore_errors=True)


def _tokenizer(sources, out_dir, vocab_size, tokenizer, eos, text_key, show):
    """The tokenizer in out_dir: a copy of the given one, or a sentencepiece BPE trained on the inputs."""
    if tokenizer is not None:
        tok = load_tokenizer(tokenizer, eos)
        return load_tokenizer(tok.save(out_dir), tok.eos_token)
    if show:
        print(f"training a {vocab_size}-piece BPE tokenizer", file=sys.stderr)

    bad = []

    def texts():
        for s in sources:
            for c in chunks(s, text_key):
                for n, text, problem in records(c, text_key):
                    if problem:
                        bad.append(f"{record_name(s, n)}: {problem}")
                    elif text:
                        yield text

    try:
        path = train_tokenizer([], os.path.join(out_dir, "tokenizer"), vocab_size, threads=2, texts=texts())
    except DataError as e:
        if not str(e).startswith("no text"):
            raise
        if bad:
            raise BadRecords(
                "\n".join(
                    [
                        f"{len(bad)} bad record(s) and no good one to train the tokenizer on; fix "
                        f"them. The first {min(len(bad), SHOW_BAD)}:"
                    ]
                    + [f"  {line}" for line in bad[:SHOW_BAD]]
                )
            ) from None
        raise DataError(f"the {len(sources)} input source(s) hold no text; give non-empty inputs") from None
    return load_tokenizer(path, eos)


def _sort_keys(hashes: np.ndarray, sources, records):
    """Rows ordered by content hash (as its hex string sorts), ties by (source, record)."""
    words = np.ascontiguousarray(hashes).view(">u8").astype(np.uint64)
    return np.lexsort((records, sources, words[:, 3], words[:, 2], words[:, 1], words[:, 0]))


def _join(parts, out_dir, tok, val_tokens, skip_bad):
    """Every part's documents in hash order, repeats dropped: into val until it holds val_tokens, then train."""
    records_, tables = zip(*(read_part(p) for p in parts), strict=True)
    _check_bad(records_, skip_bad)
    cols = {k: np.concatenate([t[k] for t in tables]) for k in ("hashes", "sources", "records", "offsets", "lengths")}
    part_of = np.concatenate([np.full(len(t["lengths"]), k, dtype=np.int32) for k, t in enumerate(tables)])
    order = _sort_keys(cols["hashes"], cols["sources"], cols["records"])
    h = cols["hashes"][order]
    repeat = np.zeros(len(order), dtype=bool)
    repeat[1:] = (h[1:] == h[:-1]).all(axis=1)
    kept, dropped = order[~repeat], order[repeat]
    lengths = cols["lengths"][kept]
    before = np.cumsum(lengths) - lengths
    is_val = before < val_tokens
    dtype = records_[0]["dtype"]
    itemsize = np.dtype(dtype).itemsize
    spools = [open(os.path.join(p, SPOOL), "rb") for p in parts]
    try:
        for rows, name, idx in ((kept[is_val], VAL, VAL_IDX), (kept[~is_val], TRAIN, TRAIN_IDX)):
            with open(os.path.join(out_dir, name), "wb", buffering=1 << 22) as out:
                for r in rows:
                    f = spools[part_of[r]]
                    out.write(
                        os.pread(f.fileno(), int(cols["lengths"][r]) * itemsize, int(cols["offsets"][r]) * itemsize)
                    )
                out.flush()
                os.fsync(out.fileno())
            write_index(os.path.join(out_dir, idx), cols["lengths"][rows], dtype)
    finally:
        for f in spools:
            f.close()
    counts = {"train": int(lengths[~is_val].sum()), "val": int(lengths[is_val].sum())}
    if counts["train"] == 0:
        if not len(kept):
            raise DataError(
                f"the {sum(len(r['sources']) for r in records_)} input source(s) hold no text; give non-empty inputs"
            )
        raise DataError(
            f"all {counts['val']} tokens went to the validation split (--val-tokens {val_tokens}); "
            f"lower --val-tokens or add text"
        )
    sources = _source_summaries(records_, cols, kept, dropped, is_val)
    tok_sha = file_sha256(tok.path)
    meta = DataMeta(
        dir=str(out_dir),
        vocab_size=tok.vocab_size,
        dtype=dtype,
        tokenizer=os.path.basename(tok.path),
        tokenizer_sha256=tok_sha,
        train_tokens=counts["train"],
        val_tokens=counts["val"],
        eos_id=tok.eos_id,
        bos_id=tok.bos_id,
        train_documents=int((~is_val).sum()),
        val_documents=int(is_val.sum()),
        val_tokens_requested=val_tokens,
        sources=sources,
        skipped_bad=sum(s.get("bad", 0) for s in sources),
        contents_sha256=contents_sha256(out_dir, tok_sha),
    )
    write_meta(meta)
    load_meta(out_dir)


def _check_bad(part_records, skip_bad):
    bad = sum(s["bad"] for r in part_records for s in r["sources"].values())
    if bad and not skip_bad:
        named = [line for _, _, line in sorted(b for r in part_records for b in r["bad_named"])][:SHOW_BAD]
        files = len({k for r in part_records for k, s in r["sources"].items() if s["bad"]})
        raise BadRecords(
            "\n".join(
                [
                    f"{bad} bad record(s) in {files} input(s); fix them, or pass --skip-bad to "
                    f"leave them out (counted in meta.json). The first {len(named)}:"
                ]
                + [f"  {line}" for line in named]
            )
        )


def _source_summaries(part_records, cols, kept, dropped, is_val) -> list:
    """One summary per input: its records, documents kept, repeats dropped, bad and empty ones, tokens per split."""
    summaries = {}
    for r in part_records:  # a file shared out among shards has a summary in each: their counts add up
        for k, v in r["sources"].items():
            if int(k) in summaries:
                for field in ("records", "bad", "empty", "tokens"):
                    summaries[int(k)][field] += v[field]
            else:
                summaries[int(k)] = dict(v)
    n = max(summaries) + 1 if summaries else 0

    def per_source(rows, weights=None):
        return np.bincount(cols["sources"][rows], weights=weights, minlength=n)

    docs, reps = per_source(kept), per_source(dropped)
    val_tok = per_source(kept[is_val], cols["lengths"][kept[is_val]].astype(np.float64))
    train_tok = per_source(kept[~is_val], cols["lengths"][kept[~is_val]].astype(np.float64))
    out = []
    for k in sorted(summaries):
        s = summaries[k]
        s.pop("tokens", None)
        s.update(
            documents=int(docs[k]), repeats=int(reps[k]), train_tokens=int(train_tok[k]), val_tokens=int(val_tok[k])
        )
        out.append(s)
    return out
