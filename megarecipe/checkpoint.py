"""Checkpoints: DeepSpeed's files per tag, a pointer that moves only after every rank finished writing.

RUN/checkpoints/step000120/   DeepSpeed's model and optimizer shards, plus trainer_rank{r}.pt (RNG, step)
RUN/checkpoints/latest         the tag of the newest complete checkpoint (replaced atomically)
A crash while step N is written leaves `latest` naming the previous, complete checkpoint.
"""
from __future__ import annotations

import os
import random
import shutil

import numpy as np
import torch
import torch.distributed as dist

POINTER = "latest"


def tag_for(step: int) -> str:
    return f"step{step:08d}"


def latest_tag(ckpt_dir: str) -> str | None:
    path = os.path.join(ckpt_dir, POINTER)
    if not os.path.isfile(path):
        return None
    tag = open(path).read().strip()
    return tag if os.path.isdir(os.path.join(ckpt_dir, tag)) else None


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save(engine, ckpt_dir: str, step: int, keep: int, layout: dict) -> str:
    """Every rank calls this. `layout` (sharding, seed, batch, budget) is kept to check a resume against.
    Returns the tag written."""
    tag = tag_for(step)
    engine.save_checkpoint(ckpt_dir, tag=tag, client_state={"step": step}, save_latest=False)
    rank = dist.get_rank()
    torch.save({"step": step, "rng": _rng_state(), "layout": layout},
               os.path.join(ckpt_dir, tag, f"trainer_rank{rank}.pt"))
    dist.barrier()
    if rank == 0:
        tmp = os.path.join(ckpt_dir, f".{POINTER}.tmp")
        with open(tmp, "w") as f:
            f.write(tag)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(ckpt_dir, POINTER))
        _prune(ckpt_dir, keep, tag)
    dist.barrier()
    return tag


def _prune(ckpt_dir: str, keep: int, newest: str) -> None:
    tags = sorted(t for t in os.listdir(ckpt_dir) if t.startswith("step") and t <= newest)
    for old in tags[:-keep]:
        shutil.rmtree(os.path.join(ckpt_dir, old), ignore_errors=True)


def saved_layout(ckpt_dir: str) -> dict | None:
    tag = latest_tag(ckpt_dir)
    path = os.path.join(ckpt_dir, tag, "trainer_rank0.pt") if tag else None
    if not path or not os.path.isfile(path):
        return None
    return torch.load(path, weights_only=False).get("layout")


def load(engine, ckpt_dir: str) -> int:
    """Restore the newest complete checkpoint; returns its step."""
    tag = latest_tag(ckpt_dir)
    if tag is None:
        raise FileNotFoundError(f"no complete checkpoint in {ckpt_dir}")
    _, client = engine.load_checkpoint(ckpt_dir, tag=tag)
    own = os.path.join(ckpt_dir, tag, f"trainer_rank{dist.get_rank()}.pt")
    if os.path.isfile(own):
        _set_rng_state(torch.load(own, weights_only=False)["rng"])
    return int(client["step"])
