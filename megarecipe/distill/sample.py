"""A data dir of sequences sampled from a teacher (sequence-level distillation), written in resumable shards.

Every sequence starts from EOS, the separator prepare.py puts between documents (so the teacher begins a new
document), and holds seq_len tokens: EOS and seq_len - 1 drawn ones. train.bin is the sequences back to back and
one closing EOS, so the trainer's window i is exactly sequence i (its last target is the next sequence's EOS).
val.bin is empty: held-out loss is measured on real text (with data.mix, the first data dir's).

OUT/shards/ holds the plan and one file per finished shard (atomic writes); shard s is drawn with its own
generator seeded by (seed, s), so a killed run continues from its finished shards and ends with the same bytes
as an uninterrupted one. Under torchrun the shards are dealt out to the ranks (shard s to rank s mod N): the
bytes do not depend on the number of ranks. meta.json is written last (rank 0, after all ranks), then the
shards go.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys

import numpy as np

from megarecipe import atomic
from megarecipe.data.errors import DataError
from megarecipe.data.indexed import write_index
from megarecipe.data.meta import (
    DATA_FILES,
    META,
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
from megarecipe.data.tokenizer import find_tokenizer, load_tokenizer

SHARDS, PLAN = "shards", "plan.json"


def plan_for(
    teacher: str, tokens: int, temperature: float, top_p: float | None, seed: int, batch: int, shard_sequences: int
) -> dict:
    """What the run will draw; a resume must find the same plan."""
    from megarecipe.distill import teacher as teachers

    ms = teachers.members(teacher)
    if len({m.tokenizer_sha256 for m in ms}) != 1 or ms[0].tokenizer_sha256 is None:
        raise DataError(
            f"--teacher {teacher}: its members were not all trained with one known tokenizer; sample "
            f"from members of one data dir"
        )
    if len({m.seq_len for m in ms}) != 1:
        raise DataError(f"--teacher {teacher}: its members have different model.seq_len; use members of one shape")
    tok = find_tokenizer(ms[0].export)
    if tok is None:
        raise DataError(
            f"--teacher {teacher}: {ms[0].export} holds no tokenizer; re-export the member with its tokenizer"
        )
    for name, ok in (
        ("--tokens", tokens >= ms[0].seq_len),
        ("--temperature", 0 < temperature < math.inf),
        ("--top-p", top_p is None or 0 < top_p <= 1),
        ("--seed", seed >= 0),
        ("--batch", batch >= 1),
        ("--shard-sequences", shard_sequences >= 1),
    ):
        if not ok:
            raise DataError(
                f"{name} is out of range (tokens >= seq_len {ms[0].seq_len}, 0 < temperature < inf, "
                f"0 < top-p <= 1, seed >= 0, batch and shard size >= 1); fix the option"
            )
    sp = load_tokenizer(ms[0].export)
    who = teachers.identity(teacher)
    return {
        "teacher": {"dir": who["dir"], "members": who["members"], "sha256": who["sha256"]},
        "temperature": temperature,
        "top_p": top_p,
        "seed": seed,
        "batch": batch,
        "shard_sequences": shard_sequences,
        "seq_len": ms[0].seq_len,
        "sequences": tokens // ms[0].seq_len,
        "tokenizer_sha256": ms[0].tokenizer_sha256,
        "vocab_size": sp.vocab_size,
        "eos_id": sp.eos_id,
        "bos_id": sp.bos_id,
        "tokenizer": tok,
    }


def sample(
    teacher: str,
    out: str,
    tokens: int,
    temperature: float = 1.0,
    top_p: float | None = None,
    seed: int = 0,
    batch: int = 8,
    shard_sequences: int = 256,
    device: str = "cpu",
    bf16: bool = False,
    stop_after_shards: int | None = None,
    log=None,
    rank: int = 0,
    world: int = 1,
    barrier=None,
) -> DataMeta | None:
    """Sample into data dir `out`; returns its DataMeta (on rank 0), or None when stopped after
    `stop_after_shards` new shards. With world > 1, `barrier()` waits for every rank's shards."""
    plan = plan_for(teacher, tokens, temperature, top_p, seed, batch, shard_sequences)
    shard_dir = os.path.join(out, SHARDS)
    if os.path.isfile(os.path.join(out, META)):
        meta = load_meta(out)
        if meta.source == _source(plan):
            return meta
        raise DataError(f"--out {out} is a data dir made otherwise; give a new folder")
    if os.path.isdir(out) and {f for f in os.listdir(out) if ".tmp" not in f} - DATA_FILES - {SHARDS}:
        raise DataError(f"--out {out} holds files that are not a sampled data dir's; give a new folder")
    os.makedirs(shard_dir, exist_ok=True)
    _check_plan(shard_dir, plan, out)

    import torch

    from megarecipe.distill.teacher import Teacher
    from megarecipe.model.generate import generate

    models = None
    n, per = plan["sequences"], plan["shard_sequences"]
    count = -(-n // per)
    written = 0
    for s in range(rank, count, world):
        path = _shard_path(shard_dir, s)
        if os.path.isfile(path):
            continue
        if stop_after_shards is not None and written >= stop_after_shards:
            return None
        if models is None:
            models = Teacher(teacher, device, bf16=bf16).models
        rows = min(per, n - s * per)
        gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, s]).generate_state(1)[0]))
        parts = []
        for start in range(0, rows, batch):
            b = min(batch, rows - start)
            prompt = torch.full((b, 1), plan["eos_id"], dtype=torch.long, device=device)
            with torch.inference_mode():
                drawn = generate(models, prompt, plan["seq_len"] - 1, plan["vocab_size"], temperature, top_p, gen)
            parts.append(drawn.cpu().numpy())
        atomic.write_bytes(path, np.concatenate(parts).astype(dtype_for(plan["vocab_size"])).tobytes())
        written += 1
        if log:
            log(f"shard {s + 1}/{count}: {rows} sequences of {plan['seq_len']} tokens")
    if barrier is not None:
        barrier()
    return _assemble(out, shard_dir, plan, count) if rank == 0 else None


def _source(plan: dict) -> dict:
    keep = ("teacher", "temperature", "top_p", "seed", "batch", "shard_sequences", "seq_len", "sequences")
    return {"kind": "sampled", **{k: plan[k] for k in keep}}


def _shard_path(shard_dir: str, s: int) -> str:
    return os.path.join(shard_dir, f"shard{s:06d}.bin")


def _check_plan(shard_dir: str, plan: dict, out: str) -> None:
    path = os.path.join(shard_dir, PLAN)
    if not os.path.isfile(path):
        atomic.write_json(path, plan)
        return
    with open(path) as f:
        saved = json.load(f)
    changed = sorted(k for k in set(saved) | set(plan) if saved.get(k) != plan.get(k))
    if changed:
        raise DataError(
            f"--out {out} holds shards of a sample run with other {', '.join(changed)}; continue it with "
            f"the same options or give a new folder"
        )


def _assemble(out: str, shard_dir: str, plan: dict, count: int) -> DataMeta:
    dtype = dtype_for(plan["vocab_size"])
    eos = np.asarray([plan["eos_id"]], dtype=dtype).tobytes()
    lengths, offset = [], 0
    tmp = os.path.join(out, f"{TRAIN}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        for s in range(count):
            with open(_shard_path(shard_dir, s), "rb") as shard:
                data = shard.read()
            data += eos if s == count - 1 else b""
            f.write(data)
            n = len(data) // np.dtype(dtype).itemsize
            lengths.append(n)
            offset += n
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(out, TRAIN))
    atomic.write_bytes(os.path.join(out, VAL), b"")
    write_index(os.path.join(out, TRAIN_IDX), lengths, dtype)  # one document per shard
    write_index(os.path.join(out, VAL_IDX), [], dtype)
    tok = load_tokenizer(os.path.dirname(plan["tokenizer"]))
    tok.save(out)
    meta = DataMeta(
        dir=out,
        vocab_size=plan["vocab_size"],
        tokenizer_sha256=plan["tokenizer_sha256"],
        dtype=dtype,
        tokenizer=os.path.basename(plan["tokenizer"]),
        train_tokens=offset,
        val_tokens=0,
        eos_id=plan["eos_id"],
        bos_id=plan["bos_id"],
        train_documents=len(lengths),
        source=_source(plan),
        contents_sha256=contents_sha256(out, plan["tokenizer_sha256"]),
    )
    write_meta(meta)
    shutil.rmtree(shard_dir)
    return load_meta(out)


def stderr_log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
