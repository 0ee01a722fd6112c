"""Fill in each candidate's memory, communication and estimated step time, then rank: layouts that fit
first, fastest first; ties go to the smaller memory."""

from __future__ import annotations

from megarecipe.config import Config
from megarecipe.plan.candidates import ZERO_VARIANTS, Candidate, ds_json
from megarecipe.plan.comm import Machine, comm_volume, step_seconds
from megarecipe.plan.memory import ZeroSetting, plan_memory
from megarecipe.plan.shapes import stage_tensors


def assess(
    candidates: list[Candidate],
    cfg: Config,
    world: int,
    memory_budget: float,
    margin: float,
    hw: Machine,
    bf16: bool,
    gpu: bool,
    with_deepspeed: bool = True,
) -> None:
    settings = {z: ZeroSetting.from_json(ds_json(z)) for z in ZERO_VARIANTS}
    m, gb = cfg.model, cfg.train.global_batch_size
    for c in candidates:
        if c.refused:
            continue
        z, vocab = settings[c.zero], c.vocab
        c.memory = plan_memory(
            m, vocab, z, c.tp, c.pp, c.dp, c.micro_batch, c.microbatches, c.recompute, bf16, gpu, with_deepspeed
        )
        local = max(sum(t.numel for t in stage_tensors(m, vocab, c.tp, c.pp, s)) for s in {0, c.pp - 1})
        c.comm = comm_volume(m, z, local, c.tp, c.pp, c.dp, c.micro_batch, c.microbatches, c.recompute, bf16)
        c.step_seconds = step_seconds(m, vocab, c.comm, hw, world, c.tp, c.pp, gb, c.microbatches, c.recompute)
        # the larger of our model-state figure and DeepSpeed's own estimate, where it has one
        states = max(c.memory.model_states, c.memory.deepspeed_model_states or 0)
        need = c.memory.total - c.memory.model_states + states
        c.extra["needed_bytes"] = need
        c.fits = need * (1 + margin) <= memory_budget
    rank(candidates)


def sort_key(c: Candidate):
    measured = c.measured and c.measured.get("tokens_per_s")
    return (not c.fits, -(measured or 0), c.step_seconds, c.memory.total)


def rank(candidates: list[Candidate]) -> list[Candidate]:
    ranked = sorted((c for c in candidates if not c.refused), key=sort_key)
    for i, c in enumerate(ranked, 1):
        c.rank = i
    return ranked
