"""One optimizer step's forward and backward, and one evaluation, through megatron's schedule for every layout.

megatron's forward-backward function runs the microbatches (1F1B across pipeline stages when PP > 1, a plain
loop otherwise); its forward step calls the DeepSpeed engine and hands the output to an objective
(megarecipe/train/objectives.py). `engine.step()` - called by the loop, not here - reduces and updates once per
global batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from megatron.core import parallel_state as ps
from megatron.core.pipeline_parallel import get_forward_backward_func

from megarecipe.parallel.engine import hooks_backward
from megarecipe.train.objectives import CrossEntropy, HeldOutSum, Microbatch


class Stepper:
    def __init__(self, engine, model, seq_len: int, micro_batch_size: int, device: torch.device, objective=None):
        self.engine, self.model, self.device = engine, model, device
        self.forward_module = engine if hooks_backward(engine) else engine.module
        self.seq_len, self.micro_batch_size = seq_len, micro_batch_size
        self.objective = objective or CrossEntropy()
        self.held_out = HeldOutSum()
        self.forward_backward = get_forward_backward_func()
        self.metric_names = None

    def _forward_step(self, objective):
        def forward_step(data_iterator, model):
            batch = next(data_iterator)
            tokens, targets = batch.tokens.to(self.device), batch.targets.to(self.device)
            positions = torch.arange(self.seq_len, device=self.device).unsqueeze(0).expand(tokens.shape[0], -1)
            # without labels GPTModel returns this rank's vocabulary shard of the logits, [b, s, v / tp]
            labels = None if getattr(objective, "needs_logits", False) else targets
            output = self.forward_module(tokens, positions, None, labels=labels)
            return output, lambda per_token: objective(per_token, batch)

        return forward_step

    def _run(self, microbatches: list[Microbatch], objective, forward_only: bool) -> list[dict]:
        return self.forward_backward(
            forward_step_func=self._forward_step(objective),
            data_iterator=iter(microbatches),
            model=[self.model],
            num_microbatches=len(microbatches),
            seq_length=self.seq_len,
            micro_batch_size=microbatches[0].tokens.shape[0],
            decoder_seq_length=self.seq_len,
            forward_only=forward_only,
        )

    def train_step(self, tokens: torch.Tensor, targets: torch.Tensor, ids=None) -> dict[str, float]:
        """Forward and backward over this rank's share of the global batch. Returns the objective's metrics
        averaged over the global batch, on every rank; the caller decides whether to apply the update."""
        n = tokens.shape[0] // self.micro_batch_size
        microbatches = [Microbatch(t, y) for t, y in zip(tokens.chunk(n), targets.chunk(n), strict=True)]
        if ids is not None:  # the training sequences' ids, for a teacher cache
            for mb, i in zip(microbatches, torch.as_tensor(ids).chunk(n), strict=True):
                mb.ids = i
        results = self._run(microbatches, self.objective, forward_only=False)
        if self.metric_names is None:  # fixed by the objective; the stages agree on them once
            self.metric_names = _names_from_last_stage(sorted(results[0]) if results else [])
        names = self.metric_names
        local = (
            torch.stack([torch.stack([r[k].float() for r in results]).mean() for k in names])
            if results
            else torch.zeros(len(names))
        )
        values = _from_last_stage(local.to(self.device), mean_over_dp=True)
        return dict(zip(names, values, strict=True))

    @torch.no_grad()
    def evaluate(self, microbatches: list[Microbatch]) -> float:
        """Exact mean per-token loss over the weighted microbatches of every data-parallel rank."""
        self.engine.eval()
        try:
            results = self._run(microbatches, self.held_out, forward_only=True)
        finally:
            self.engine.train()
        sums = torch.zeros(2, dtype=torch.float64, device=self.device)
        for r in results:
            sums += torch.stack([r["sum"].double(), r["count"].double()]).to(self.device)
        if ps.is_pipeline_last_stage():
            dist.all_reduce(sums, group=ps.get_data_parallel_group())
        value = (sums[0] / sums[1].clamp(min=1)).float().reshape(1) if results else torch.zeros(1, device=self.device)
        return _from_last_stage(value, mean_over_dp=False)[0]


def _names_from_last_stage(names: list[str]) -> list[str]:
    """Metric names are known on the last pipeline stage; the other stages learn them from it."""
    if ps.get_pipeline_model_parallel_world_size() == 1:
        return names
    box = [names if ps.is_pipeline_last_stage() else None]
    group = ps.get_pipeline_model_parallel_group()
    dist.broadcast_object_list(
        box, src=dist.get_global_rank(group, ps.get_pipeline_model_parallel_world_size() - 1), group=group
    )
    return box[0]


def _from_last_stage(values: torch.Tensor, mean_over_dp: bool) -> list[float]:
    """Values known on the last pipeline stage, made known to every rank."""
    values = values.detach().float().reshape(-1).clone()
    last = ps.is_pipeline_last_stage()
    if mean_over_dp and last:
        dist.all_reduce(values, group=ps.get_data_parallel_group())
        values /= ps.get_data_parallel_world_size()
    if ps.get_pipeline_model_parallel_world_size() > 1:
        if not last:
            values.zero_()
        dist.all_reduce(values, group=ps.get_pipeline_model_parallel_group())
    return values.tolist()
