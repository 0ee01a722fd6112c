"""Sources -> a part: every document tokenized, in input order, into one spool file, with a table of its
content hash, source, record number, offset and length. A whole prepare is one part; `--shard I/N` writes the
part of its share of the sources (prepare.deal), and the join (prepare.join_parts) gives the same data dir from
any set of parts.

Chunks are tokenized by `workers` spawned processes, at most 2 chunks per worker in flight, and consumed in the
order they were cut: the spool is the same bytes for any number of workers, and memory is bounded by workers x a
chunk plus about 60 bytes per document for the table."""

from __future__ import annotations

import collections
import hashlib
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from megarecipe import atomic
from megarecipe.data.errors import DataError
from megarecipe.data.indexed import Index
from megarecipe.data.readers import chunks, record_name, records, source_sha256
from megarecipe.data.tokenizer import file_sha256, load_tokenizer

SPOOL, PART_JSON, TABLE = "tokens.bin", "part.json", ("hashes", "sources", "records", "offsets", "lengths")
SHOW_BAD = 10
_worker = {}  # a worker's tokenizer and settings


def _init(tokenizer_path, eos, dtype, text_key):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one thread per worker: the pool is the parallelism
    _worker.update(tok=load_tokenizer(tokenizer_path, eos), dtype=dtype, text_key=text_key)


def encode_chunk(chunk) -> dict:
    tok, dtype = _worker["tok"], _worker["dtype"]
    keep, bad, empty = [], [], 0
    for n, text, problem in records(chunk, _worker["text_key"]):
        if problem:
            bad.append((n, problem))
        elif not text:
            empty += 1
        else:
            keep.append((n, text))
    ids = tok.encode_batch([t for _, t in keep]) if keep else []
    lengths = np.fromiter((len(i) + 1 for i in ids), dtype=np.int64, count=len(ids))
    flat = np.empty(int(lengths.sum()), dtype=dtype)
    at = 0
    for row in ids:
        flat[at : at + len(row)] = row
        at += len(row) + 1
        flat[at - 1] = tok.eos_id
    hashes = b"".join(hashlib.sha256(t.encode()).digest() for _, t in keep)
    return {
        "source": chunk.source,
        "records": np.asarray([n for n, _ in keep], dtype=np.int64),
        "hashes": np.frombuffer(hashes, dtype=np.uint8).reshape(-1, 32),
        "lengths": lengths,
        "tokens": flat,
        "bad": bad,
        "empty": empty,
        "chars": sum(len(t) for _, t in keep),
        "pos": chunk.pos,
    }


def _results(jobs, workers, init_args):
    """encode_chunk of every job, in job order; in this process for workers <= 1."""
    if workers <= 1:
        _init(*init_args)
        for job in jobs:
            yield encode_chunk(job)
        return
    # spawn, not fork: the caller may hold threads (pyarrow's, a trainer's) whose locks a forked child would
    # inherit taken. Not forkserver either: a process has one forkserver, and the warm-start launcher's
    # (megarecipe.launch.warm) must keep its own preload. A spawned worker costs ~0.3 CPU-s to import this module.
    pool = ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init, initargs=init_args
    )
    try:
        pending = collections.deque()
        for job in jobs:
            pending.append(pool.submit(encode_chunk, job))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BrokenProcessPool:
        raise DataError(
            f"a tokenizing worker died (killed, or out of memory; or it could not start: a script that "
            f'calls prepare() needs `if __name__ == "__main__":`); run again with fewer --workers '
            f"than {workers}"
        ) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class Progress:
    """One line every `every` seconds on stderr: bytes read, tokens, tokens/s, ETA."""

    def __init__(self, total_bytes, show, every=10.0, what="tokenizing"):
        self.total, self.show, self.every, self.what = max(total_bytes, 1), show, every, what
        self.start = self.last = time.time()
        self.tokens = 0

    def update(self, done_bytes, tokens, final=False):
        self.tokens += tokens
        now = time.time()
        if not self.show or (now - self.last < self.every and not final):
            return
        self.last = now
        rate = self.tokens / max(now - self.start, 1e-9)
        frac = min(done_bytes / self.total, 1.0)
        eta = (now - self.start) * (1 - frac) / frac if frac > 0 else float("nan")
        print(
            f"{self.what}: {done_bytes / 1e6:,.1f}/{self.total / 1e6:,.1f} MB ({100 * frac:.0f}%), "
            f"{self.tokens / 1e6:,.2f}M tokens, {rate / 1e6:.2f}M tokens/s, ETA {_duration(eta)}",
            file=sys.stderr,
            flush=True,
        )


def _duration(s) -> str:
    if s != s:
        return "?"
    return f"{s:.0f}s" if s < 90 else f"{s / 60:.0f}m" if s < 5400 else f"{s / 3600:.1f}h"


def encode_part(sources, part_dir, tokenizer, text_key, workers, show, identity, dealt=None) -> dict:
    """Tokenize `sources` into part_dir; return part.json's record. Bad records are counted (the first
    SHOW_BAD named) and dropped; the caller decides whether that is an error.
    dealt: {source index: (i, n)} for sources shared out among shards: only their chunks k with k % n == i."""
    dtype = identity["dtype"]
    table = {k: [] for k in TABLE}
    summaries = {s.index: _summary(s) for s in sources}
    bad_named, offset = [], 0
    progress = Progress(sum(s.bytes for s in sources), show)
    done_before = {s.index: sum(x.bytes for x in sources[:k]) for k, s in enumerate(sources)}
    dealt = dealt or {}
    jobs = (
        c
        for s in sources
        for k, c in enumerate(chunks(s, text_key))
        if s.index not in dealt or k % dealt[s.index][1] == dealt[s.index][0]
    )
    by_index = {s.index: s for s in sources}
    with open(os.path.join(part_dir, SPOOL), "wb") as spool:
        for r in _results(jobs, workers, (tokenizer.path, tokenizer.eos_token, dtype, text_key)):
            s, n = summaries[r["source"]], len(r["lengths"])
            spool.write(r["tokens"].tobytes())
            table["hashes"].append(r["hashes"])
            table["sources"].append(np.full(n, r["source"], dtype=np.int32))
            table["records"].append(r["records"])
            table["offsets"].append(offset + np.concatenate([[0], np.cumsum(r["lengths"])[:-1]]).astype(np.int64))
            table["lengths"].append(r["lengths"])
            offset += int(r["lengths"].sum())
            s["records"] += n + len(r["bad"]) + r["empty"]
            s["bad"] += len(r["bad"])
            s["empty"] += r["empty"]
            s["tokens"] += int(r["lengths"].sum())
            for rec, why in r["bad"][: max(0, SHOW_BAD - len(bad_named))]:
                bad_named.append([r["source"], rec, f"{record_name(by_index[r['source']], rec)}: {why}"])
            progress.update(done_before[r["source"]] + r["pos"], int(r["lengths"].sum()))
        spool.flush()
        os.fsync(spool.fileno())
    progress.update(sum(s.bytes for s in sources), 0, final=True)
    return _finish(part_dir, table, summaries, bad_named, identity)


def megatron_part(prefix, part_dir, tokenizer, show, identity, source_index=0) -> dict:
    """A Megatron PREFIX.bin/.idx as a part: each of its documents one document (EOS appended where it does not
    end with one), hashed by its tokens."""
    idx = Index(prefix + ".idx")
    bin_path = prefix + ".bin"
    need = int(idx.pointers[-1]) + int(idx.lengths[-1]) * np.dtype(idx.dtype).itemsize if idx.sequence_count else 0
    if not os.path.isfile(bin_path) or os.path.getsize(bin_path) < need:
        raise DataError(
            f"--megatron {prefix}: {bin_path} is missing or shorter than its .idx says ({need} bytes); "
            f"give a complete .bin/.idx pair"
        )
    tokens = np.memmap(bin_path, dtype=idx.dtype, mode="r") if need else np.empty(0, dtype=idx.dtype)
    dtype, eos = identity["dtype"], tokenizer.eos_id
    summary = {
        "path": os.path.abspath(prefix),
        "format": "megatron",
        "bytes": os.path.getsize(bin_path),
        "sha256": file_sha256(prefix + ".idx"),
        "records": idx.documents,
        "bad": 0,
        "empty": 0,
        "tokens": 0,
    }
    table = {k: [] for k in TABLE}
    progress, offset = Progress(summary["bytes"], show, what="reading"), 0
    with open(os.path.join(part_dir, SPOOL), "wb") as spool:
        for start in range(0, idx.documents, 4096):
            stop = min(start + 4096, idx.documents)
            hashes, lengths, records = [], [], []
            for i in range(start, stop):
                a, n = idx.document_span(i)
                doc = np.asarray(tokens[a : a + n])
                if n == 0:
                    summary["empty"] += 1
                    continue
                if int(doc.max()) >= tokenizer.vocab_size or int(doc.min()) < 0:
                    raise DataError(
                        f"--megatron {prefix}: document {i} holds token id {int(doc.max())}, outside "
                        f"the {tokenizer.vocab_size} ids of --tokenizer {tokenizer.path}; give the "
                        f"tokenizer it was made with"
                    )
                doc = doc.astype(dtype)
                if doc[-1] != eos:
                    doc = np.append(doc, np.asarray([eos], dtype=dtype))
                spool.write(doc.tobytes())
                hashes.append(hashlib.sha256(doc.astype("<i4").tobytes()).digest())
                lengths.append(len(doc))
                records.append(i)
            lengths = np.asarray(lengths, dtype=np.int64)
            table["hashes"].append(np.frombuffer(b"".join(hashes), dtype=np.uint8).reshape(-1, 32))
            table["sources"].append(np.full(len(lengths), source_index, dtype=np.int32))
            table["records"].append(np.asarray(records, dtype=np.int64))
            table["offsets"].append(offset + np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64))
            table["lengths"].append(lengths)
            offset += int(lengths.sum())
            summary["tokens"] += int(lengths.sum())
            done = int(idx.pointers[int(idx.document_indices[stop]) - 1]) if stop else 0
            progress.update(done, int(lengths.sum()))
    progress.update(summary["bytes"], 0, final=True)
    return _finish(part_dir, table, {source_index: summary}, [], identity)


def _summary(s) -> dict:
    return {
        "path": os.path.abspath(s.path),
        **({"split": s.split} if s.split else {}),
        "format": s.format,
        **({"compression": s.compression} if s.compression else {}),
        "bytes": s.bytes,
        "sha256": source_sha256(s),
        "records": 0,
        "bad": 0,
        "empty": 0,
        "tokens": 0,
    }


def _finish(part_dir, table, summaries, bad_named, identity) -> dict:
    for k in TABLE:
        parts = table[k]
        empty = np.empty((0, 32), dtype=np.uint8) if k == "hashes" else np.empty(0, dtype=np.int64)
        np.save(os.path.join(part_dir, f"{k}.npy"), np.concatenate(parts) if parts else empty)
    record = {**identity, "sources": {str(k): v for k, v in sorted(summaries.items())}, "bad_named": bad_named}
    atomic.write_text(os.path.join(part_dir, PART_JSON), json.dumps(record, indent=1) + "\n")
    return record


def read_part(part_dir) -> tuple[dict, dict]:
    """(part.json, the table) of a finished part."""
    path = os.path.join(part_dir, PART_JSON)
    try:
        with open(path) as f:
            record = json.load(f)
        return record, {k: np.load(os.path.join(part_dir, f"{k}.npy"), mmap_mode="r") for k in TABLE}
    except (OSError, ValueError) as e:
        raise DataError(f"{part_dir}: not a finished shard ({type(e).__name__}); run its --shard again") from None
