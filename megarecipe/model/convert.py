"""Between megatron's sharded parameters and canonical (TP=1, PP=1) ones: pure tensor functions.

Column-parallel weights (QKV, MLP input, embedding, output head) are split along rows, row-parallel ones
(attention and MLP output projections) along columns; norms are replicated. The fused MLP input holds
[gate; up] and megatron gives each TP rank its own [gate slice; up slice] (fc1 is built with stride 2), so
it is not a plain concatenation. The QKV rows are grouped per kv head, and a rank holds whole groups, so
a plain concatenation is right for it.
"""

from __future__ import annotations

import re

import torch

_ROW_PARALLEL = ("linear_proj.weight", "linear_fc2.weight")
_COLUMN_PARALLEL = ("linear_qkv.weight", "linear_fc1.weight", "word_embeddings.weight", "output_layer.weight")
_LAYER = re.compile(r"^decoder\.layers\.(\d+)\.")


def _dim(name: str) -> int | None:
    if name.endswith(_ROW_PARALLEL):
        return 1
    if name.endswith(_COLUMN_PARALLEL):
        return 0
    return None


def merge_tensor_parallel(name: str, shards: list[torch.Tensor]) -> torch.Tensor:
    """The full tensor from each TP rank's shard, in rank order."""
    if not shards:
        raise ValueError(f"{name}: no shards to merge")
    dim = _dim(name)
    if dim is None:
        for shard in shards[1:]:
            if not torch.equal(shard, shards[0]):
                raise ValueError(f"{name}: replicated parameter differs across tensor-parallel ranks")
        return shards[0]
    if name.endswith("linear_fc1.weight"):
        gates, ups = zip(*(s.chunk(2, dim=0) for s in shards), strict=True)
        return torch.cat([*gates, *ups], dim=0)
    return torch.cat(shards, dim=dim)


def split_tensor_parallel(name: str, full: torch.Tensor, tp: int) -> list[torch.Tensor]:
    """What each of `tp` ranks holds of the full tensor; the inverse of merge_tensor_parallel."""
    dim = _dim(name)
    if dim is None:
        return [full] * tp
    parts = full.chunk(2, dim=0) if name.endswith("linear_fc1.weight") else [full]
    for part in parts:
        if part.shape[dim] % tp:
            raise ValueError(
                f"{name}: size {part.shape[dim]} along dim {dim} is not divisible by tp={tp}; "
                f"choose a TP size that divides it"
            )
    if len(parts) == 2:
        pairs = zip(parts[0].chunk(tp, dim=0), parts[1].chunk(tp, dim=0), strict=True)
        return [torch.cat([g, u], dim=0) for g, u in pairs]
    return list(full.chunk(tp, dim=dim))


def global_layer_name(name: str, layer_offset: int) -> str:
    """A pipeline stage numbers its layers from 0; the canonical name uses the global index."""
    return _LAYER.sub(lambda m: f"decoder.layers.{int(m.group(1)) + layer_offset}.", name)


# Transformer Engine fuses each pre-norm into the linear after it, so its norm weights are named after that
# linear; the canonical names are the local spec's (megatron-core keeps this same map for its checkpoints).
_TE_NORMS = {
    ".self_attention.linear_qkv.layer_norm_weight": ".input_layernorm.weight",
    ".mlp.linear_fc1.layer_norm_weight": ".pre_mlp_layernorm.weight",
}


def canonical_name(name: str) -> str:
    """The local-spec name of a parameter of either layer implementation."""
    for te, local in _TE_NORMS.items():
        if name.endswith(te):
            return name[: -len(te)] + local
    return name


def te_name(name: str) -> str:
    """The Transformer Engine spec's name for a canonical parameter name; the inverse of canonical_name."""
    for te, local in _TE_NORMS.items():
        if name.endswith(local):
            return name[: -len(local)] + te
    return name
