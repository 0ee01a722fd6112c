"""One optimizer step and one evaluation, through megatron's schedule for every layout.

megatron's forward-backward function runs the microbatches (1F1B across pipeline stages when PP > 1, a
plain loop otherwise); its forward step calls the DeepSpeed engine, and `engine.step()` reduces the
gradients and updates once per global batch.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from megatron.core import parallel_state as ps
from megatron.core.pipeline_parallel import get_forward_backward_func

from megarecipe.parallel.engine import hooks_backward


class Stepper:
    def __init__(self, engine, model, seq_len: int, micro_batch_size: int, device: torch.device):
        self.engine, self.model, self.device = engine, model, device
        self.forward_module = engine if hooks_backward(engine) else engine.module
        self.seq_len, self.micro_batch_size = seq_len, micro_batch_size
        self.forward_backward = get_forward_backward_func()
        # Fault injection for tests of the non-finite guard: the step (1-based) whose loss becomes NaN.
        self.nan_step = int(os.environ.get("MEGARECIPE_INJECT_NAN_AT_STEP", "0"))
        self.step_number = 0

    def _positions(self, batch: int) -> torch.Tensor:
        return torch.arange(self.seq_len, device=self.device).unsqueeze(0).expand(batch, -1)

    def _forward(self, weighted: bool):
        def forward_step(data_iterator, model):
            tokens, targets, weights = next(data_iterator)
            tokens, targets = tokens.to(self.device), targets.to(self.device)
            output = self.forward_module(tokens, self._positions(tokens.shape[0]), None, labels=targets)

            def loss_func(per_token):
                per_token = per_token.float()
                if weighted:
                    w = weights.to(per_token.device)
                    total = (per_token * w).sum()
                    return total, {"sum": total.detach().clone(), "count": w.sum()}
                loss = per_token.mean()
                if self.nan_step and self.step_number == self.nan_step:
                    loss = loss * float("nan")
                # clone: the schedule divides the returned loss in place by the microbatch count
                return loss, {"loss": loss.detach().clone()}
            return output, loss_func
        return forward_step

    def _run(self, microbatches: list, forward_only: bool, weighted: bool) -> list[dict]:
        return self.forward_backward(
            forward_step_func=self._forward(weighted), data_iterator=iter(microbatches), model=[self.model],
            num_microbatches=len(microbatches), seq_length=self.seq_len,
            micro_batch_size=microbatches[0][0].shape[0], decoder_seq_length=self.seq_len,
            forward_only=forward_only)

    def train_step(self, tokens: torch.Tensor, targets: torch.Tensor, step_number: int) -> float:
        """Forward and backward over this rank's share of the global batch; returns the mean loss over
        the global batch (on every rank). The caller decides whether to apply the update."""
        self.step_number = step_number
        n = tokens.shape[0] // self.micro_batch_size
        microbatches = [(t, y, None) for t, y in zip(tokens.chunk(n), targets.chunk(n))]
        results = self._run(microbatches, forward_only=False, weighted=False)
        local = torch.stack([r["loss"] for r in results]).mean() if results else torch.zeros(())
        return _from_last_stage(local.to(self.device), mean_over_dp=True)

    @torch.no_grad()
    def evaluate(self, microbatches: list) -> float:
        """Exact mean per-token loss over the (tokens, targets, per-token weights) microbatches of every
        data-parallel rank; weight 0 marks padding."""
        self.engine.eval()
        try:
            results = self._run(microbatches, forward_only=True, weighted=True)
        finally:
            self.engine.train()
        sums = torch.zeros(2, dtype=torch.float64, device=self.device)
        for r in results:
            sums += torch.stack([r["sum"].double(), r["count"].double()]).to(self.device)
        if ps.is_pipeline_last_stage():
            dist.all_reduce(sums, group=ps.get_data_parallel_group())
        value = (sums[0] / sums[1].clamp(min=1)).float() if results else torch.zeros((), device=self.device)
        return _from_last_stage(value, mean_over_dp=False)


def _from_last_stage(value: torch.Tensor, mean_over_dp: bool) -> float:
    """A value known on the last pipeline stage, made known to every rank."""
    value = value.detach().float().reshape(1).clone()
    last = ps.is_pipeline_last_stage()
    if mean_over_dp and last:
        dist.all_reduce(value, group=ps.get_data_parallel_group())
        value /= ps.get_data_parallel_world_size()
    if ps.get_pipeline_model_parallel_world_size() > 1:
        if not last:
            value.zero_()
        dist.all_reduce(value, group=ps.get_pipeline_model_parallel_group())
    return value.item()
