"""A teacher's top-k distribution over every training position, computed once and memory-mapped, so that
distillation runs no teacher at training time.

CACHE/cache.json      the teacher (members, weight hashes), k, temperature, and the student data it covers:
                      data dir tokenizer, seq_len, budget (num_sequences), vocabulary
CACHE/logp.npy        float32 [num_sequences, seq_len, k]: log p_T of the k most likely tokens, descending
CACHE/ids.npy         int32   [num_sequences, seq_len, k]: those tokens
CACHE/tail.npy        float32 [num_sequences, seq_len]: the probability of every other token together

p_T is the softmax of the teacher's logits / T over the tokenizer's columns; row i is training sequence i of the
budget (megarecipe/data/dataset.py), whatever the epoch order. With k = the vocabulary the tail is zero and
distillation from the cache equals distillation from the live teacher.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from dataclasses import dataclass

import numpy as np
import torch

from megarecipe.atomic import build_dir, replace_dir
from megarecipe.data.dataset import TokenDataset
from megarecipe.distill.sources import CACHE_JSON, is_cache, read_info
from megarecipe.errors import RunError, UserError

__all__ = ["CACHE_JSON", "FORMAT", "CachedTeacher", "TopK", "build", "check", "is_cache", "read_info"]
FORMAT = 1


@dataclass
class TopK:
    logp: torch.Tensor  # [b, s, k] fp32
    ids: torch.Tensor  # [b, s, k] int64
    tail: torch.Tensor  # [b, s] fp32


@torch.no_grad()
def build(
    teacher_dir: str,
    data_dir: str,
    seq_len: int,
    budget_tokens: int | None,
    k: int,
    temperature: float,
    out: str,
    device="cpu",
    batch_size: int = 8,
    bf16: bool = False,
    progress: bool = True,
) -> dict:
    """Write the cache into OUT.tmp, then move it into place."""
    from tqdm import tqdm

    from megarecipe.distill import teacher as teachers

    out = os.path.realpath(out)  # one path for the check and the write
    if os.path.exists(out) and not is_cache(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise UserError(
            f"--out {out}: exists and is no teacher cache (no {CACHE_JSON}); it would be replaced, so "
            f"give a new directory (or an older cache to rebuild)"
        )
    data = TokenDataset(data_dir, seq_len, budget_tokens)
    vocab = data.meta.vocab_size
    teachers.check(teacher_dir, data.meta.tokenizer_sha256, vocab, seq_len)
    if not 1 <= k <= vocab:
        raise UserError(f"--k={k} must be in [1, {vocab}] (the tokenizer's vocabulary)")
    n = data.num_sequences
    need = 4 * n * seq_len * (2 * k + 1)
    free = _free_bytes(out)
    if need > free:
        raise teachers.TeacherError(_no_room(out, need, free))
    model = teachers.Teacher(teacher_dir, device, bf16)
    tmp = build_dir(out)
    try:  # space claimed before the arrays are mapped: a full disk under a mapping is a SIGBUS, not an error
        logp, ids, tail = (
            _mapped(os.path.join(tmp, name), dtype, shape)
            for name, dtype, shape in (
                ("logp.npy", np.float32, (n, seq_len, k)),
                ("ids.npy", np.int32, (n, seq_len, k)),
                ("tail.npy", np.float32, (n, seq_len)),
            )
        )
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise teachers.TeacherError(_no_room(out, need, _free_bytes(out))) from None
        raise
    try:
        for start in tqdm(range(0, n, batch_size), disable=not progress, desc="teacher", unit="batch"):
            rows = np.arange(start, min(n, start + batch_size))
            tokens, _ = data.windows(rows)
            full = torch.log_softmax(model.logits(tokens)[..., :vocab] / temperature, dim=-1)
            top, top_ids = full.topk(k, dim=-1)
            rest = full.exp().sum(-1) - top.exp().sum(-1) if k < vocab else torch.zeros(full.shape[:-1])
            logp[rows] = top.cpu().numpy()
            ids[rows] = top_ids.int().cpu().numpy()
            tail[rows] = rest.clamp(min=0).cpu().numpy()
        for array in (logp, ids, tail):
            array.flush()
        info = {
            "format": FORMAT,
            "teacher": teachers.identity(teacher_dir),
            "k": k,
            "temperature": temperature,
            "tokenizer_sha256": data.meta.tokenizer_sha256,
            "data_sha256": data.meta.content_sha256(),
            "vocab_size": vocab,
            "seq_len": seq_len,
            "num_sequences": n,
        }
        with open(os.path.join(tmp, CACHE_JSON), "w") as f:
            json.dump(info, f, indent=1)
    except BaseException:  # a half-written build would keep a full disk full
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, out)  # the old cache goes only once the new one is complete
    return info


def _mapped(path: str, dtype, shape) -> np.memmap:
    array = np.lib.format.open_memmap(path, "w+", dtype, shape)
    with open(path, "r+b") as f:
        os.posix_fallocate(f.fileno(), 0, os.path.getsize(path))
    return array


def _free_bytes(path: str) -> int:
    while not os.path.isdir(path):  # the nearest folder that exists: OUT and its parents may be made later
        path = os.path.dirname(path)
    return shutil.disk_usage(path).free


def _no_room(out: str, need: int, free: int) -> str:
    return (
        f"--out {out}: the cache needs {need / 1e9:.3g} GB and its file system has {free / 1e9:.3g} GB free; "
        f"free space there, give --out on a larger disk, or lower --k"
    )


def check(
    path: str,
    tokenizer_sha256: str,
    seq_len: int,
    num_sequences: int,
    temperature: float,
    data_sha256: str | None = None,
) -> dict:
    """The cache must cover exactly the student's training sequences (of this data dir's contents: data_sha256),
    at the student's temperature."""
    from megarecipe.distill.teacher import TeacherError

    try:
        info = read_info(path)
    except (OSError, ValueError) as e:
        raise TeacherError(f"distill.teacher: {path}/{CACHE_JSON} is unreadable ({e}); rebuild the cache") from None
    if not isinstance(info, dict) or not isinstance(info.get("k"), int) or not isinstance(info.get("teacher"), dict):
        raise TeacherError(
            f"distill.teacher: {path}/{CACHE_JSON} is not a cache's description (no k or teacher); rebuild the cache"
        )
    want = {
        "format": FORMAT,
        "tokenizer_sha256": tokenizer_sha256,
        "seq_len": seq_len,
        "num_sequences": num_sequences,
        "temperature": temperature,
    }
    if data_sha256 is not None:  # another data dir with the same tokenizer and budget has other tokens
        want["data_sha256"] = data_sha256
    for key, value in want.items():
        if info.get(key) != value:
            raise TeacherError(
                f"distill.teacher: the cache {path} has {key}={info.get(key)!r}, the student needs "
                f"{value!r}; rebuild it with tools/distill.py cache for this student's data.dir, "
                f"data.train_tokens, model.seq_len and distill.temperature"
            )
    shape = (num_sequences, seq_len)
    for name, want_shape in (("logp.npy", (*shape, info["k"])), ("ids.npy", (*shape, info["k"])), ("tail.npy", shape)):
        try:
            got = np.load(os.path.join(path, name), mmap_mode="r").shape  # reads the header, checks the size
        except (OSError, ValueError) as e:
            raise TeacherError(
                f"distill.teacher: {path}/{name} is missing or damaged ({e}); rebuild the cache"
            ) from None
        if got != want_shape:
            raise TeacherError(
                f"distill.teacher: {path}/{name} has shape {got}, {CACHE_JSON} says {want_shape}; rebuild the cache"
            )
    return info


class CachedTeacher:
    """Microbatch (with its sequence ids) -> TopK, read from the memory-mapped cache."""

    def __init__(self, path: str):
        self.path, self.vocab = path, read_info(path)["vocab_size"]
        self.logp = np.load(os.path.join(path, "logp.npy"), mmap_mode="r")
        self.ids = np.load(os.path.join(path, "ids.npy"), mmap_mode="r")
        self.tail = np.load(os.path.join(path, "tail.npy"), mmap_mode="r")

    def __call__(self, batch) -> TopK:
        rows = np.asarray(batch.ids)
        logp, tail = np.ascontiguousarray(self.logp[rows]), np.ascontiguousarray(self.tail[rows])
        ids = self.ids[rows].astype(np.int64)
        # a damaged cache, not a bad LR: an id outside the vocabulary indexes past the student's logits
        outside = (ids < 0) | (ids >= self.vocab)
        if outside.any():
            where = np.argwhere(outside)[0]
            raise RunError(
                f"distill.teacher: {self.path}/ids.npy holds token id {ids[tuple(where)]} at training "
                f"sequence {rows[where[0]]}, outside the vocabulary of {self.vocab}; the cache is damaged: "
                f"rebuild it with tools/distill.py cache"
            )
        finite = np.isfinite(logp).all(axis=(1, 2)) & np.isfinite(tail).all(axis=1)
        if not finite.all():
            raise RunError(
                f"distill.teacher: {self.path} holds non-finite log-probabilities at training sequence "
                f"{rows[np.argmin(finite)]}; the cache is damaged: rebuild it with tools/distill.py cache"
            )
        return TopK(torch.from_numpy(logp), torch.from_numpy(ids), torch.from_numpy(tail))
