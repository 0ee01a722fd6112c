"""Which settings define a run's result (settings_sha256), and which only how it is operated."""

from __future__ import annotations

import hashlib
import json

from omegaconf import OmegaConf

from megarecipe.config.schema import Config

# Settings that change how a run is operated, not what it computes.
_OPERATIONAL = {
    "run": ("dir", "resume", "resume_from"),
    "model": ("recompute", "kernels"),
    "train": ("stop_after", "progress", "log_every", "checkpoint_every", "keep_checkpoints"),
}


def run_settings(cfg: Config) -> dict:
    """The settings that define a run's result, as plain values: runs with equal settings are the same run."""
    plain = OmegaConf.to_container(OmegaConf.structured(cfg))
    for section, names in _OPERATIONAL.items():
        for name in names:
            plain[section].pop(name)
    plain.pop("logging")  # where the curves also go
    if plain["model"]["init_from"] is None:  # a run from random weights: its settings as before init_from existed
        plain["model"].pop("init_from")
    if not plain["distill"]["teacher"]:  # alpha and temperature mean nothing without a teacher
        plain.pop("distill")
    optim = plain["optim"]  # the schedule's settings at their defaults: a run's settings are what they were before
    if optim["schedule"] != "wsd":  # they existed (decay_frac means nothing to cosine)
        optim.pop("decay_frac")
    if optim["schedule"] == "cosine":
        optim.pop("schedule")
    if optim["min_lr_ratio"] == 0:
        optim.pop("min_lr_ratio")
    if not plain["data"]["mix"]:  # a single-dir run's settings are what they were before data.mix existed
        plain["data"].pop("mix")
    return plain


def settings_sha256(cfg: Config) -> str:

    return hashlib.sha256(json.dumps(run_settings(cfg), sort_keys=True).encode()).hexdigest()
