"""Loss objects: what the step minimises or measures on one microbatch.

An objective is called as `objective(per_token_loss, batch) -> (loss, metrics)` on the ranks that compute the
loss (the last pipeline stage), where `per_token_loss` is megatron's next-token cross-entropy [b, s] and `batch`
the microbatch. `loss` is what backward sees (the schedule divides it by the microbatch count); `metrics` are
detached tensors the step averages over microbatches and data-parallel ranks (training) or sums (evaluation).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Microbatch:
    tokens: torch.Tensor              # [b, s]
    targets: torch.Tensor             # [b, s], next tokens
    weights: torch.Tensor | None = None  # [b, s] per-token weights for evaluation; 0 marks padding


class CrossEntropy:
    """Training: mean next-token cross-entropy over the microbatch."""

    def __call__(self, per_token: torch.Tensor, batch: Microbatch):
        loss = per_token.float().mean()
        # clone: the schedule divides the returned loss in place by the microbatch count
        return loss, {"loss": loss.detach().clone()}


class HeldOutSum:
    """Evaluation: the weighted sum of per-token losses and the weight, so that ranks and microbatches of any
    size add up to the exact mean over the held-out tokens."""

    def __call__(self, per_token: torch.Tensor, batch: Microbatch):
        w = batch.weights.to(per_token.device)
        total = (per_token.float() * w).sum()
        return total, {"sum": total.detach().clone(), "count": w.sum()}
