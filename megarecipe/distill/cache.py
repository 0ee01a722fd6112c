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

import json
import os
from dataclasses import dataclass

import numpy as np
import torch

from megarecipe.distill.sources import CACHE_JSON, is_cache, read_info

__all__ = ["CACHE_JSON", "FORMAT", "CachedTeacher", "TopK", "build", "check", "is_cache", "read_info"]
FORMAT = 1


@dataclass
class TopK:
    logp: torch.Tensor   # [b, s, k] fp32
    ids: torch.Tensor    # [b, s, k] int64
    tail: torch.Tensor   # [b, s] fp32


@torch.no_grad()
def build(teacher_dir: str, data_dir: str, seq_len: int, budget_tokens: int | None, k: int, temperature: float,
          out: str, device="cpu", batch_size: int = 8, bf16: bool = False, progress: bool = True) -> dict:
    """Write the cache into OUT.tmp, then move it into place."""
    from tqdm import tqdm

    from megarecipe.distill import teacher as teachers
    from megarecipe.atomic import build_dir, replace_dir
    from megarecipe.data.dataset import TokenDataset

    out = os.path.realpath(out)   # one path for the check and the write
    if os.path.exists(out) and not is_cache(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise ValueError(f"--out {out}: exists and is no teacher cache (no {CACHE_JSON}); it would be replaced, so "
                         f"give a new directory (or an older cache to rebuild)")
    data = TokenDataset(data_dir, seq_len, budget_tokens)
    vocab = data.meta.vocab_size
    teachers.check(teacher_dir, data.meta.tokenizer_sha256, vocab, seq_len)
    if not 1 <= k <= vocab:
        raise ValueError(f"--k={k} must be in [1, {vocab}] (the tokenizer's vocabulary)")
    model = teachers.Teacher(teacher_dir, device, bf16)
    n = data.num_sequences
    tmp = build_dir(out)
    logp = np.lib.format.open_memmap(os.path.join(tmp, "logp.npy"), "w+", np.float32, (n, seq_len, k))
    ids = np.lib.format.open_memmap(os.path.join(tmp, "ids.npy"), "w+", np.int32, (n, seq_len, k))
    tail = np.lib.format.open_memmap(os.path.join(tmp, "tail.npy"), "w+", np.float32, (n, seq_len))
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
    info = {"format": FORMAT, "teacher": teachers.identity(teacher_dir), "k": k, "temperature": temperature,
            "tokenizer_sha256": data.meta.tokenizer_sha256, "vocab_size": vocab, "seq_len": seq_len,
            "num_sequences": n}
    with open(os.path.join(tmp, CACHE_JSON), "w") as f:
        json.dump(info, f, indent=1)
    replace_dir(tmp, out)   # the old cache goes only once the new one is complete
    return info


def check(path: str, tokenizer_sha256: str, seq_len: int, num_sequences: int, temperature: float) -> dict:
    """The cache must cover exactly the student's training sequences, at the student's temperature."""
    from megarecipe.distill.teacher import TeacherError

    try:
        info = read_info(path)
    except (OSError, ValueError) as e:
        raise TeacherError(f"distill.teacher: {path}/{CACHE_JSON} is unreadable ({e}); rebuild the cache") from None
    if not isinstance(info, dict) or not isinstance(info.get("k"), int) or not isinstance(info.get("teacher"), dict):
        raise TeacherError(f"distill.teacher: {path}/{CACHE_JSON} is not a cache's description (no k or teacher); "
                           f"rebuild the cache")
    want = {"format": FORMAT, "tokenizer_sha256": tokenizer_sha256, "seq_len": seq_len,
            "num_sequences": num_sequences, "temperature": temperature}
    for key, value in want.items():
        if info.get(key) != value:
            raise TeacherError(f"distill.teacher: the cache {path} has {key}={info.get(key)!r}, the student needs "
                               f"{value!r}; rebuild it with tools/distill.py cache for this student's data.dir, "
                               f"data.train_tokens, model.seq_len and distill.temperature")
    shape = (num_sequences, seq_len)
    for name, want_shape in (("logp.npy", (*shape, info["k"])), ("ids.npy", (*shape, info["k"])), ("tail.npy", shape)):
        try:
            got = np.load(os.path.join(path, name), mmap_mode="r").shape   # reads the header, checks the size
        except (OSError, ValueError) as e:
            raise TeacherError(f"distill.teacher: {path}/{name} is missing or damaged ({e}); rebuild the cache") \
                from None
        if got != want_shape:
            raise TeacherError(f"distill.teacher: {path}/{name} has shape {got}, {CACHE_JSON} says {want_shape}; "
                               f"rebuild the cache")
    return info


class CachedTeacher:
    """Microbatch (with its sequence ids) -> TopK, read from the memory-mapped cache."""

    def __init__(self, path: str):
        self.logp = np.load(os.path.join(path, "logp.npy"), mmap_mode="r")
        self.ids = np.load(os.path.join(path, "ids.npy"), mmap_mode="r")
        self.tail = np.load(os.path.join(path, "tail.npy"), mmap_mode="r")

    def __call__(self, batch) -> TopK:
        rows = np.asarray(batch.ids)
        return TopK(torch.from_numpy(np.ascontiguousarray(self.logp[rows])),
                    torch.from_numpy(self.ids[rows].astype(np.int64)),
                    torch.from_numpy(np.ascontiguousarray(self.tail[rows])))
