"""The DeepSpeed engine: its JSON derived from the run config, the AdamW groups, the LR schedule.

Microbatches are driven by megatron's schedule (so pipeline and non-pipeline runs share one path) and
`engine.step()` is the single gradient-reduction point: DeepSpeed runs with gradient_accumulation_steps=1
and managed_gradient_accumulation=false.
"""

from __future__ import annotations

import math

import deepspeed
import torch
from deepspeed.runtime.base_optimizer import ZeROOptimizer

from megarecipe.config import Config, Layout, read_ds_config
from megarecipe.model import universal
from megarecipe.parallel.mpu import MegatronMPU


def ds_config(cfg: Config, layout: Layout, bf16: bool, load_universal: bool = False) -> dict:
    ds = read_ds_config(cfg.parallel.ds_config)
    if load_universal:  # a checkpoint of another layout, converted (megarecipe/train/universal.py)
        ds["checkpoint"] = {**ds.get("checkpoint", {}), "load_universal": True}
    ds.update(
        {
            "train_micro_batch_size_per_gpu": layout.micro_batch_size,
            "gradient_accumulation_steps": 1,
            "train_batch_size": layout.micro_batch_size * layout.dp,
            "managed_gradient_accumulation": False,
            "gradient_clipping": cfg.optim.grad_clip,
            "bf16": {"enabled": bf16},
            "fp16": {"enabled": False},
        }
    )
    ds.setdefault("steps_per_print", 10**9)
    if ds.get("zero_optimization", {}).get("offload_optimizer"):
        ds["zero_force_ds_cpu_optimizer"] = False  # keep torch's AdamW: no compiled cpu_adam needed
    return ds


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices (attention, MLP, output head); none on embeddings, norms or biases."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and "word_embeddings" not in name else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]


def lr_factor(
    step: int, total: int, warmup: int, schedule: str = "cosine", min_ratio: float = 0.0, decay_frac: float = 0.2
) -> float:
    """The LR multiplier of step `step` (from 0): linear warm-up over `warmup` steps, then
    cosine: half a cosine from 1 down to min_ratio at `total` (the paper's schedule), or
    wsd (warmup-stable-decay): 1 until the last decay_frac of the steps after warm-up, then linear to min_ratio."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "wsd":
        decay = max(1, math.ceil(decay_frac * (total - warmup)))
        left = (total - step) / decay
        return min_ratio + (1.0 - min_ratio) * max(0.0, min(1.0, left))
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def lr_schedule(cfg: Config, layout: Layout):
    """step -> LR multiplier, as the run's optim.* settings define it."""
    o, total, warmup = cfg.optim, layout.total_steps, layout.warmup_steps
    return lambda step: lr_factor(step, total, warmup, o.schedule, o.min_lr_ratio, o.decay_frac)


def build_engine(model: torch.nn.Module, cfg: Config, layout: Layout, bf16: bool, load_universal: bool = False):
    o = cfg.optim
    optimizer = torch.optim.AdamW(param_groups(model, o.weight_decay), lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps)

    def schedule(opt):
        return torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(cfg, layout))

    universal.attach(model)  # how its TP shards merge, saved in every checkpoint (for a resume on another layout)
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=schedule,
        config=ds_config(cfg, layout, bf16, load_universal),
        mpu=MegatronMPU(),
    )
    if hooks_backward(engine):
        # ZeRO resets its per-backward hook bookkeeping only in engine.forward(). A pipeline schedule runs
        # several backwards between forwards, and the later ones would then never reduce their gradients;
        # resetting after every backward's epilogue makes each backward count (see docs/pipeline-zero.md).
        engine.optimizer.register_grad_acc_post_hook(engine.optimizer.clear_backward_seen_flag)
    return engine


def skip_update(engine) -> None:
    """Drop this step's gradients but keep the schedule moving. ZeRO's step() sees the non-finite gradient
    norm, discards its partitioned gradient buffers and applies nothing (zero_grad() alone would leave them to
    poison the next step); without ZeRO the plain gradients are cleared."""
    if hooks_backward(engine):
        engine.step()
    else:
        engine.zero_grad()
    engine.lr_scheduler.step()


def hooks_backward(engine) -> bool:
    """Whether DeepSpeed follows a plain `tensor.backward()` through hooks (its ZeRO and bf16 optimizers do).
    Without them (fp32 ZeRO-0) the schedule must call the bare module; `engine.step()` then all-reduces
    the accumulated gradients itself."""
    return isinstance(engine.optimizer, ZeROOptimizer)
