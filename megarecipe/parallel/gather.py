"""The whole model's fp32 weights under canonical (TP=1, PP=1) names, assembled on global rank 0.

ZeRO-3 partitions are gathered first; tensor-parallel shards are merged within each TP group; pipeline
stages send their layers, renumbered to global indices, to the first stage of data-parallel replica 0.
"""

from __future__ import annotations

from contextlib import nullcontext

import deepspeed
import torch
import torch.distributed as dist
from deepspeed.utils import safe_get_full_fp32_param
from megatron.core import parallel_state as ps

from megarecipe.model.convert import canonical_name, global_layer_name, merge_tensor_parallel


def layer_offset(model) -> int:
    decoder = getattr(model, "decoder", None)
    layers = getattr(decoder, "layers", None)
    return layers[0].layer_number - 1 if layers is not None and len(layers) else 0


def _master_fp32(p: torch.Tensor) -> torch.Tensor:
    master = safe_get_full_fp32_param(p)
    return (master if master is not None else p.detach()).float().clone()


def full_state_dict(model, zero_stage: int, device: torch.device) -> dict | None:
    """Every rank calls this; global rank 0 gets the state dict, the others None."""
    params = list(model.named_parameters())
    if any(p.dtype != torch.float32 for _, p in params):
        # bf16 training: take the optimizer's fp32 master weights, not the rounded copies (collective)
        local = {name: _master_fp32(p) for name, p in params}
    else:
        gathered = deepspeed.zero.GatheredParameters([p for _, p in params]) if zero_stage == 3 else nullcontext()
        with gathered:
            local = {name: p.detach().float().clone() for name, p in params}
    if ps.get_data_parallel_rank() != 0:
        return None

    tp = ps.get_tensor_model_parallel_world_size()
    offset = layer_offset(model)
    merged = {}
    for name, p in params:
        tensor = local[name].to(device)
        if tp > 1 and getattr(p, "tensor_model_parallel", False):
            shards = [torch.empty_like(tensor) for _ in range(tp)]
            dist.all_gather(shards, tensor.contiguous(), group=ps.get_tensor_model_parallel_group())
            tensor = merge_tensor_parallel(name, [s.cpu() for s in shards])
        merged[canonical_name(global_layer_name(name, offset))] = tensor.cpu()
    if ps.get_tensor_model_parallel_rank() != 0:
        return None

    if ps.get_pipeline_model_parallel_world_size() > 1:
        stages = [None] * ps.get_pipeline_model_parallel_world_size()
        first = ps.get_pipeline_model_parallel_first_rank()
        dist.gather_object(
            merged,
            stages if dist.get_rank() == first else None,
            dst=first,
            group=ps.get_pipeline_model_parallel_group(),
        )
        if dist.get_rank() != first:
            return None
        merged = {k: v for stage in stages for k, v in stage.items()}
    return merged if dist.get_rank() == 0 else None
