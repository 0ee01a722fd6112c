"""Loss objects: what the step minimises or measures on one microbatch.

An objective is called as `objective(per_token_loss, batch) -> (loss, metrics)` on the ranks that compute the
loss (the last pipeline stage), where `per_token_loss` is megatron's next-token cross-entropy [b, s] and `batch`
the microbatch. `loss` is what backward sees (the schedule divides it by the microbatch count); `metrics` are
detached tensors the step averages over microbatches and data-parallel ranks (training) or sums (evaluation).
An objective with `needs_logits = True` is given the model's logits [b, s, v / tp] instead of the per-token loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Microbatch:
    tokens: torch.Tensor  # [b, s]
    targets: torch.Tensor  # [b, s], next tokens
    weights: torch.Tensor | None = None  # [b, s] per-token weights for evaluation; 0 marks padding
    ids: torch.Tensor | None = None  # [b] training sequence ids (for a teacher cache)


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


class _SumOverGroup(torch.autograd.Function):
    """All-reduce sum over the tensor-parallel group in forward; identity in backward, because every rank of
    the group computes the same loss from the sum (megatron's reduce-from-TP-region)."""

    @staticmethod
    def forward(ctx, x, group):
        x = x.clone()
        torch.distributed.all_reduce(x, group=group)
        return x

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class Distill:
    """Training by a frozen teacher: per token `alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE`,
    averaged over the microbatch.

    Called with the student's logits [b, s, v / tp] (this rank's vocabulary shard, `needs_logits`), exact under
    tensor parallelism: the softmax statistics are reduced over `group` (None: one rank holds every column).
    The KL runs over the tokenizer's `vocab` columns only (padding columns are no tokens); the CE term is the
    next-token cross-entropy over every column, as megatron's and `val/loss` compute it.
    """

    needs_logits = True

    def __init__(self, teacher, alpha: float, temperature: float, vocab: int, group=None, shard: int = 0):
        self.teacher, self.alpha, self.temperature, self.vocab = teacher, alpha, temperature, vocab
        self.group, self.shard = group, shard  # the TP group and this rank's index in it

    def _sum(self, x: torch.Tensor) -> torch.Tensor:
        return _SumOverGroup.apply(x, self.group) if self.group is not None else x

    def _max(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().clone()
        if self.group is not None:
            torch.distributed.all_reduce(x, op=torch.distributed.ReduceOp.MAX, group=self.group)
        return x

    def _logsumexp(self, z: torch.Tensor) -> torch.Tensor:
        """log sum exp over the last dim across the shards; a shard may hold no columns."""
        local_max = z.max(dim=-1).values if z.shape[-1] else torch.full(z.shape[:-1], -torch.inf, device=z.device)
        m = self._max(local_max)
        return self._sum((z - m.unsqueeze(-1)).exp().sum(dim=-1)).log() + m

    def __call__(self, logits: torch.Tensor, batch: Microbatch):
        z = logits.float()
        width = z.shape[-1]
        lo = self.shard * width
        targets = batch.targets.to(z.device)

        # cross-entropy: logsumexp over every column minus the target's logit, which one shard holds
        local = (targets >= lo) & (targets < lo + width)
        picked = z.gather(-1, (targets - lo).clamp(0, width - 1).unsqueeze(-1)).squeeze(-1) * local
        ce = self._logsumexp(z) - self._sum(picked)

        t = self.temperature
        real = max(0, min(width, self.vocab - lo))
        student = z[..., :real] / t
        with torch.no_grad():
            taught = self.teacher(batch)
        if isinstance(taught, torch.Tensor):  # a live teacher's logits [b, s, V]
            # KL over the tokenizer's columns: sum_v p_v (log p_v - z_v / T) + logsumexp(z / T)
            teacher_logp = torch.log_softmax(taught.to(z.device)[..., : self.vocab] / t, dim=-1)[..., lo : lo + real]
            p = teacher_logp.exp()
            kl = self._sum((p * (teacher_logp - student)).sum(dim=-1)) + self._logsumexp(student)
        else:
            kl = self._top_k_kl(student, taught, lo)

        kl_mean, ce_mean = kl.mean(), ce.mean()
        loss = self.alpha * t * t * kl_mean + (1 - self.alpha) * ce_mean
        return loss, {
            "loss": loss.detach().clone(),
            "distill/kl": kl_mean.detach().clone(),
            "distill/ce": ce_mean.detach().clone(),
        }

    def _top_k_kl(self, student: torch.Tensor, taught, lo: int) -> torch.Tensor:
        """KL from a cached top-k teacher: its k tokens one by one, every other token as one outcome (the tail)."""
        logp, ids, tail = (x.to(student.device) for x in (taught.logp, taught.ids, taught.tail))
        real = student.shape[-1]
        if real:
            here = (ids >= lo) & (ids < lo + real)
            picked = student.gather(-1, (ids - lo).clamp(0, real - 1)) * here
        else:
            picked = torch.zeros(ids.shape, device=student.device)
        logq = self._sum(picked) - self._logsumexp(student).unsqueeze(-1)
        q_tail = (1 - logq.exp().sum(-1)).clamp(min=1e-30)
        return (logp.exp() * (logp - logq)).sum(-1) + tail * (tail.clamp(min=1e-30).log() - q_tail.log())
