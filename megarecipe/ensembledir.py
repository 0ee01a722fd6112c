"""The ensemble directory: its file names, owned here and nowhere else.

ENS/run.json                kind "ensemble" (megarecipe/rundir.py): the plan while members train, the result after
ENS/members/seed<i>/        member i's run directory (run.seed = i), trained by tools/ensemble.py
ENS/ensemble.json           written by the evaluation: members, seeds, member_val_loss, val_loss_by_k, weights
ENS/loss_vs_members.png     the held-out loss against K
ENS/tb/                     ensemble/val_loss at step K

Light like rundir: every layer may import it.
"""

from __future__ import annotations

import os

from megarecipe import atomic

ENSEMBLE_JSON, MEMBERS, PLOT = "ensemble.json", "members", "loss_vs_members.png"


def listing(path: str) -> str:
    """PATH/ensemble.json."""
    return os.path.join(path, ENSEMBLE_JSON)


def is_ensemble(path: str) -> bool:
    return os.path.isfile(listing(path))


def member_dir(path: str, seed: int) -> str:
    return os.path.join(path, MEMBERS, f"seed{seed}")


def read(path: str) -> dict:
    """ensemble.json as a dict; {} when it is missing or not a JSON object."""
    return atomic.read_json(listing(path))


def write(path: str, fields: dict) -> None:
    atomic.write_json(listing(path), fields)
