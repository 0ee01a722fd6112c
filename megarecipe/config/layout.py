"""Every setting checked and the layout derived, from the config alone: no file is read but the DeepSpeed JSON.
What the data dir, the tokenizer and the teacher hold is checked by megarecipe/preflight.py, which passes the
data's facts in."""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from typing import Optional

from megarecipe import rundir
from megarecipe.config.ds_config import check_not_set, read_ds_config, zero_stage
from megarecipe.config.schema import Config, ConfigError
from megarecipe.config.sources import mix_sources
from megarecipe.system import has_cuda


@dataclass
class Layout:
    """What the config and the world size imply: the numbers every later stage uses."""

    world_size: int
    tp: int
    pp: int
    dp: int
    zero_stage: int
    micro_batch_size: int
    global_batch_size: int
    seq_len: int
    vocab_size: int  # the model's, padded
    tokenizer_vocab: int
    num_sequences: int  # training sequences in the budget
    train_tokens: int  # D actually used: num_sequences * seq_len
    total_steps: int
    warmup_steps: int
    epoch_sequences: int = 0  # sequences per epoch: num_sequences, plus the other dirs' share with data.mix


KERNELS = ("auto", "local", "sdpa", "te")


def resolve_kernels(kernels: str, cuda: bool, here: bool = True) -> str:
    """model.kernels as the model is built on a machine with or without CUDA: auto is sdpa on CUDA, local
    elsewhere. te is never chosen for the user: its parameter names differ, so a run started with it must resume
    with it. here=False: that machine is not this one (whether it has Transformer Engine is its own check)."""
    _check(kernels in KERNELS, f"model.kernels={kernels!r}; use one of {', '.join(KERNELS)}")
    if kernels == "auto":
        return "sdpa" if cuda else "local"
    if kernels == "te":
        _check(cuda, "model.kernels=te needs a CUDA device; use auto, local or sdpa on this machine")
        _check(
            not here or importlib.util.find_spec("transformer_engine") is not None,
            "model.kernels=te needs Transformer Engine (pip install transformer_engine[pytorch]); "
            "or use model.kernels=sdpa",
        )
    return kernels


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


@dataclass(frozen=True)
class DataFacts:
    """What the layout needs from the data dir (megarecipe/preflight.py reads them)."""

    tokenizer_vocab: int
    train_tokens: int  # prepared training tokens of data.dir
    val_tokens: int  # held-out tokens val/loss is measured on (after data.val_tokens)
    epoch_sequences: Optional[int] = None  # with data.mix: sequences per epoch over all dirs


def resolve_layout(
    cfg: Config, world_size: Optional[int] = None, cuda: Optional[bool] = None, data: Optional[DataFacts] = None
) -> Layout:
    """Check every setting that can be checked from the config alone, and derive the layout from them.
    cuda: whether the machines that train have CUDA; None: they are this one. A planner or a Slurm submission
    judges for the GPU nodes it targets, not for the login node it runs on. data: the data dir's facts; None
    checks the settings alone (a planner's layout has no data and no step count)."""
    here = cuda is None
    cuda = has_cuda() if here else cuda
    ws = world_size if world_size is not None else int(os.environ.get("WORLD_SIZE", "1"))
    m, o, p, t, d = cfg.model, cfg.optim, cfg.parallel, cfg.train, cfg.data

    for name in ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups", "seq_len"):
        _check(getattr(m, name) >= 1, f"model.{name}={getattr(m, name)} must be >= 1")
    _check(
        m.hidden_size % m.num_attention_heads == 0,
        f"model.hidden_size={m.hidden_size} is not divisible by model.num_attention_heads={m.num_attention_heads}; "
        f"choose a hidden size that is a multiple of the head count",
    )
    _check(
        m.num_attention_heads % m.num_query_groups == 0,
        f"model.num_attention_heads={m.num_attention_heads} is not divisible by model.num_query_groups="
        f"{m.num_query_groups}; use a kv-head count that divides the head count",
    )
    _check(m.recompute in ("none", "selective", "full"), f"model.recompute={m.recompute!r}; use none/selective/full")
    resolve_kernels(m.kernels, cuda, here)
    _check(p.tp >= 1 and p.pp >= 1, f"parallel.tp={p.tp} and parallel.pp={p.pp} must be >= 1")
    _check(
        m.num_attention_heads % p.tp == 0,
        f"model.num_attention_heads={m.num_attention_heads} is not divisible by parallel.tp={p.tp}; "
        f"use a TP size that divides the head count",
    )
    _check(
        m.num_query_groups % p.tp == 0,
        f"model.num_query_groups={m.num_query_groups} is not divisible by parallel.tp={p.tp}; "
        f"use a TP size that divides the kv-head count",
    )
    _check(
        m.num_layers % p.pp == 0,
        f"model.num_layers={m.num_layers} is not divisible by parallel.pp={p.pp}; "
        f"use a PP size that divides the layer count",
    )
    _check(
        ws % (p.tp * p.pp) == 0,
        f"world size {ws} is not divisible by parallel.tp * parallel.pp = {p.tp * p.pp}; "
        f"launch a multiple of {p.tp * p.pp} processes or change tp/pp",
    )
    dp = ws // (p.tp * p.pp)

    ds = read_ds_config(p.ds_config)
    stage = zero_stage(ds)
    _check(
        stage in (0, 1, 2, 3), f"parallel.ds_config: zero_optimization.stage={stage} is not in 0-3; use 0, 1, 2 or 3"
    )
    _check(
        not (p.pp > 1 and stage > 1),
        f"parallel.pp={p.pp} with ZeRO stage {stage} is not supported (ZeRO-2/3 shard gradients that pipeline "
        f"stages accumulate); use parallel.ds_config=zero1 or zero0 with pipeline parallelism",
    )
    check_not_set(ds)

    _check(o.lr > 0 and math.isfinite(o.lr), f"optim.lr={o.lr} must be > 0")
    _check(0 <= o.weight_decay < math.inf, f"optim.weight_decay={o.weight_decay} must be >= 0 and finite")
    _check(o.eps >= 0, f"optim.eps={o.eps} must be >= 0")
    _check(0 <= o.warmup_frac < 1, f"optim.warmup_frac={o.warmup_frac} must be in [0, 1)")
    _check(0 <= o.beta1 < 1 and 0 <= o.beta2 < 1, "optim.beta1 and optim.beta2 must be in [0, 1)")
    _check(o.schedule in ("cosine", "wsd"), f"optim.schedule={o.schedule!r}; use cosine or wsd")
    _check(0 <= o.min_lr_ratio <= 1, f"optim.min_lr_ratio={o.min_lr_ratio} must be in [0, 1]")
    _check(0 < o.decay_frac <= 1, f"optim.decay_frac={o.decay_frac} must be in (0, 1]")
    _check(o.grad_clip >= 0, f"optim.grad_clip={o.grad_clip} must be >= 0 (0 turns clipping off)")

    _check(t.epochs >= 1, f"train.epochs={t.epochs} must be >= 1")
    _check(t.log_every >= 1, f"train.log_every={t.log_every} must be >= 1")
    _check(cfg.run.seed >= 0, f"run.seed={cfg.run.seed} must be >= 0")
    _check(
        cfg.run.resume_from is None or (cfg.run.resume and rundir.tag_step(cfg.run.resume_from) is not None),
        f"run.resume_from={cfg.run.resume_from!r} needs run.resume=true and a tag such as step00000120",
    )
    _check(t.micro_batch_size >= 1, f"train.micro_batch_size={t.micro_batch_size} must be >= 1")
    per_step = t.micro_batch_size * dp
    _check(
        t.global_batch_size >= per_step and t.global_batch_size % per_step == 0,
        f"train.global_batch_size={t.global_batch_size} is not a multiple of train.micro_batch_size * "
        f"data-parallel size = {t.micro_batch_size} * {dp}; set it to a multiple of {per_step}",
    )
    _check(t.eval_every >= 1, f"train.eval_every={t.eval_every} must be >= 1")
    _check(t.eval_batch_size >= 1, f"train.eval_batch_size={t.eval_batch_size} must be >= 1")
    _check(t.checkpoint_every >= 0, f"train.checkpoint_every={t.checkpoint_every} must be >= 0")
    _check(t.keep_checkpoints >= 1, f"train.keep_checkpoints={t.keep_checkpoints} must be >= 1")
    _check(t.on_nonfinite in ("stop", "skip"), f"train.on_nonfinite={t.on_nonfinite!r}; use 'stop' or 'skip'")
    _check(t.precision in ("auto", "fp32", "bf16"), f"train.precision={t.precision!r}; use auto, fp32 or bf16")
    if t.precision == "bf16" or (t.precision == "auto" and cuda):
        _check(
            stage != 0,
            "parallel.ds_config: ZeRO stage 0 with bf16 is not supported (DeepSpeed's stage-0 bf16 "
            "optimizer needs engine.backward, which megatron's schedule does not call); use zero1, "
            "or train.precision=fp32",
        )
    _check(t.stop_after is None or t.stop_after >= 1, f"train.stop_after={t.stop_after} must be >= 1 or null")
    _check(d.train_tokens is None or d.train_tokens > 0, f"data.train_tokens={d.train_tokens} must be > 0 or null")
    _check(
        d.val_tokens is None or d.val_tokens > m.seq_len,
        f"data.val_tokens={d.val_tokens} must exceed model.seq_len={m.seq_len} or be null",
    )

    mix_sources(d)
    if cfg.logging.wandb and here:
        _check(
            importlib.util.find_spec("wandb") is not None,
            'logging.wandb=true needs wandb (pip install wandb, or pip install -e ".[wandb]"); or set '
            "logging.wandb=false",
        )
    k = cfg.distill
    _check(0 <= k.alpha <= 1, f"distill.alpha={k.alpha} must be in [0, 1]")
    _check(k.temperature > 0 and math.isfinite(k.temperature), f"distill.temperature={k.temperature} must be > 0")

    tok_vocab = data.tokenizer_vocab if data else 0
    if data:
        _check(
            data.val_tokens > m.seq_len,
            f"data.dir={d.dir!r} has {data.val_tokens} validation tokens (data.val_tokens={d.val_tokens}), less "
            f"than one sequence of model.seq_len={m.seq_len}; prepare with a larger --val-tokens",
        )
        if d.train_tokens is not None:
            _check(
                d.train_tokens <= data.train_tokens,
                f"data.train_tokens={d.train_tokens} is larger than the {data.train_tokens} training tokens "
                f"prepared in {d.dir}; lower it or prepare more text",
            )
    _check(
        m.vocab_size is None or m.vocab_size >= 1,
        f"model.vocab_size={m.vocab_size} must be >= 1, or null for the tokenizer's, padded",
    )
    vocab = m.vocab_size if m.vocab_size is not None else pad_vocab(tok_vocab or 1, p.tp)
    _check(
        vocab >= tok_vocab,
        f"model.vocab_size={vocab} is smaller than the tokenizer's {tok_vocab}; "
        f"set model.vocab_size >= {tok_vocab} or leave it null",
    )
    _check(vocab % p.tp == 0, f"model.vocab_size={vocab} is not divisible by parallel.tp={p.tp}; leave it null to pad")

    budget = d.train_tokens if d.train_tokens is not None else (data.train_tokens if data else None)
    num_sequences = sequences_in(budget, m.seq_len)
    if data:
        _check(num_sequences >= 1, f"data.train_tokens={budget} is less than one sequence of model.seq_len={m.seq_len}")
    epoch_sequences = data.epoch_sequences if data and data.epoch_sequences else num_sequences
    total = t.epochs * epoch_sequences // t.global_batch_size
    if data:
        _check(
            total >= 1,
            f"{t.epochs} epoch(s) of {epoch_sequences} sequences is less than one step of "
            f"train.global_batch_size={t.global_batch_size}; raise train.epochs or lower the batch",
        )
    return Layout(
        world_size=ws,
        tp=p.tp,
        pp=p.pp,
        dp=dp,
        zero_stage=stage,
        micro_batch_size=t.micro_batch_size,
        global_batch_size=t.global_batch_size,
        seq_len=m.seq_len,
        vocab_size=vocab,
        tokenizer_vocab=tok_vocab,
        num_sequences=num_sequences,
        train_tokens=num_sequences * m.seq_len,
        total_steps=total,
        warmup_steps=max(1, math.ceil(o.warmup_frac * total)) if o.warmup_frac > 0 else 0,
        epoch_sequences=epoch_sequences,
    )


def sequences_in(budget: Optional[int], seq_len: int) -> int:
    """Training sequences of seq_len in a budget of tokens (each window also needs the next token)."""
    return (budget - 1) // seq_len if budget else 0


def pad_vocab(n: int, tp: int) -> int:
    """The tokenizer's vocabulary padded to a multiple of 128 * TP (megatron's rule)."""
    multiple = 128 * tp
    return -(-n // multiple) * multiple
