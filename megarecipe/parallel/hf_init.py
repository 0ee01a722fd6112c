"""model.init_from: this rank's shard of the model set from a Hugging Face Llama's weights, before the engine
is built (so ZeRO partitions and master copies start from them), at any TP/PP."""

from __future__ import annotations

import torch
from megatron.core import parallel_state as ps

from megarecipe.config import ModelConfig
from megarecipe.model.convert import canonical_name, global_layer_name, split_tensor_parallel
from megarecipe.model.hf import from_hf_state_dict, read_hf_weights
from megarecipe.parallel.gather import layer_offset


@torch.no_grad()
def load_hf_weights(model, path: str, m: ModelConfig) -> None:
    full = from_hf_state_dict(read_hf_weights(path), m)
    tp, tp_rank = ps.get_tensor_model_parallel_world_size(), ps.get_tensor_model_parallel_rank()
    offset = layer_offset(model)
    for name, p in model.named_parameters():
        canonical = canonical_name(global_layer_name(name, offset))
        if canonical not in full:
            raise ValueError(
                f"model.init_from={path!r}: no weight for {canonical}; the directory's config.json and "
                f"its weights disagree"
            )
        tensor = full[canonical]
        if tp > 1 and getattr(p, "tensor_model_parallel", False):
            tensor = split_tensor_parallel(canonical, tensor, tp)[tp_rank]
        if tuple(tensor.shape) != tuple(p.shape):
            raise ValueError(
                f"model.init_from={path!r}: {canonical} has shape {tuple(tensor.shape)} where the "
                f"model needs {tuple(p.shape)}"
            )
        p.copy_(tensor.to(p.dtype))
