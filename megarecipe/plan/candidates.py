"""Layouts to consider: ZeRO variant x TP x PP x micro-batch x recomputation, each checked by the trainer's
own resolve_layout(); what it refuses is kept with its reason and never proposed."""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from typing import Optional

from megarecipe import atomic
from megarecipe.config import Config, ConfigError, pad_vocab, resolve_layout
from megarecipe.data.errors import DataError
from megarecipe.plan.comm import Comm
from megarecipe.plan.memory import Memory

_BASE = {"overlap_comm": False, "contiguous_gradients": True, "reduce_bucket_size": 50_000_000}
_Z3 = {**_BASE, "stage3_param_persistence_threshold": 100_000, "stage3_gather_16bit_weights_on_model_save": False}
_CPU = {"device": "cpu", "pin_memory": True}
ZERO_VARIANTS = {
    "zero0": {"stage": 0},
    "zero1": {"stage": 1},
    "zero2": {"stage": 2, **_BASE},
    "zero2-offload": {"stage": 2, **_BASE, "offload_optimizer": _CPU},
    "zero3": {"stage": 3, **_Z3},
    "zero3-offload": {"stage": 3, **_Z3, "offload_optimizer": _CPU},
    "zero3-offload-all": {"stage": 3, **_Z3, "offload_optimizer": _CPU, "offload_param": _CPU},
}
RECOMPUTE = ("none", "selective", "full")
MAX_LAYERS = 512  # each layer's tensors are listed per candidate: beyond it minutes, then hours


def ds_json(variant: str) -> dict:
    """A ds_config like those in ds_configs/: ZeRO settings only, no batch fields."""
    return {
        "zero_optimization": copy.deepcopy(ZERO_VARIANTS[variant]),
        "steps_per_print": 1_000_000_000,
        "wall_clock_breakdown": False,
    }


def write_ds_json(variant: str, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic.write_text(path, json.dumps(ds_json(variant), indent=2) + "\n")  # several ranks may write it
    return path


@dataclass
class Candidate:
    zero: str
    tp: int
    pp: int
    dp: int
    micro_batch: int
    recompute: str
    vocab: int = 0  # the model's, padded for this TP size as the trainer pads it
    microbatches: int = 0
    refused: Optional[str] = None
    memory: Optional[Memory] = None
    comm: Optional[Comm] = None
    step_seconds: Optional[float] = None
    fits: Optional[bool] = None
    measured: Optional[dict] = None
    rank: Optional[int] = None
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.zero}-tp{self.tp}-pp{self.pp}-mbs{self.micro_batch}-rc{self.recompute}"

    def overrides(self, ds_config: str) -> list[str]:
        return [
            f"parallel.tp={self.tp}",
            f"parallel.pp={self.pp}",
            f"train.micro_batch_size={self.micro_batch}",
            f"model.recompute={self.recompute}",
            f"parallel.ds_config={ds_config}",
        ]

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "zero": self.zero,
            "ds_config": ds_json(self.zero),
            "tp": self.tp,
            "pp": self.pp,
            "dp": self.dp,
            "micro_batch_size": self.micro_batch,
            "microbatches": self.microbatches,
            "recompute": self.recompute,
            "vocab_size": self.vocab,
            "refused": self.refused,
            "fits": self.fits,
            "rank": self.rank,
            "needed_bytes": self.extra.get("needed_bytes"),
            "memory": self.memory.as_dict() if self.memory else None,
            "comm": self.comm.as_dict() if self.comm else None,
            "step_seconds": self.step_seconds,
            "measured": self.measured,
        }


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def enumerate_candidates(
    cfg: Config,
    tokenizer_vocab: int,
    world: int,
    per_node: int,
    ds_dir: str,
    zeros=None,
    tps=None,
    pps=None,
    micro_batches=None,
    recomputes=None,
    cuda: bool | None = None,
) -> list[Candidate]:
    """Every layout of the filters (None = all), validated (for machines with CUDA or not; None: this one);
    `ds_dir` receives one JSON per ZeRO variant. `tokenizer_vocab` stands in for the data dir's tokenizer when
    model.vocab_size is null."""
    paths = {z: write_ds_json(z, os.path.join(ds_dir, f"{z}.json")) for z in (zeros or ZERO_VARIANTS)}
    out = []
    for tp in tps or _divisors(per_node):
        for pp in pps or _divisors(world // tp if world % tp == 0 else 1):
            dp = max(1, world // (tp * pp))
            per_rank = cfg.train.global_batch_size // dp if cfg.train.global_batch_size % dp == 0 else 0
            mbs_list = micro_batches or _divisors(per_rank) or [cfg.train.micro_batch_size]
            for zero, path in paths.items():
                for mbs in mbs_list:
                    trial = copy.deepcopy(cfg)
                    trial.parallel.tp, trial.parallel.pp, trial.parallel.ds_config = tp, pp, path
                    trial.train.micro_batch_size = mbs
                    vocab = cfg.model.vocab_size or pad_vocab(tokenizer_vocab, tp)
                    trial.model.vocab_size = vocab
                    refused, microbatches = None, 0
                    try:
                        layout = resolve_layout(trial, world_size=world, cuda=cuda)
                        microbatches = layout.global_batch_size // (layout.micro_batch_size * layout.dp)
                    except ConfigError as e:
                        refused = str(e)
                    if refused is None and cfg.model.ffn_hidden_size % tp:
                        refused = (
                            f"model.ffn_hidden_size={cfg.model.ffn_hidden_size} is not divisible by "
                            f"parallel.tp={tp} (megatron splits the MLP evenly); use a TP size that divides it"
                        )
                    for rc in recomputes or RECOMPUTE:
                        out.append(Candidate(zero, tp, pp, dp, mbs, rc, vocab, microbatches, refused))
    return out


def check_depth(model) -> None:
    """A model the planner can list the tensors of in seconds."""
    if model.num_layers > MAX_LAYERS:
        raise ConfigError(
            f"model.num_layers={model.num_layers}: the planner handles at most {MAX_LAYERS} layers "
            f"(the largest Llamas have 126); give a real model's depth"
        )


def planned_vocab(cfg: Config) -> int:
    """model.vocab_size, else the tokenizer's (each candidate pads it for its TP size, as the trainer does)."""
    if cfg.model.vocab_size is not None:
        return cfg.model.vocab_size
    from megarecipe.data.meta import load_meta

    try:
        return load_meta(cfg.data.dir).vocab_size
    except DataError:
        raise ConfigError(
            f"model.vocab_size: not set and data.dir={cfg.data.dir!r} holds no prepared data; pass "
            f"model.vocab_size=N (e.g. 128256 for Llama-3's tokenizer) or point data.dir at "
            f"prepared data"
        ) from None
