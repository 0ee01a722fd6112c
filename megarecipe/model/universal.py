"""How megarecipe's Llama is sliced across tensor-parallel ranks, in the words of DeepSpeed's universal
checkpoints (`UNIVERSAL_CHECKPOINT_INFO`): the same facts convert.py uses to merge and split shards.

  replicated     the RMSNorm weights (every TP rank holds the whole vector)
  row parallel   attention and MLP output projections: split along dim 1
  two sub-params the SwiGLU input projection: each rank holds [gate slice; up slice] (megatron's stride 2)
  the rest       QKV (whole kv groups per rank), embedding, output head: split along dim 0

build_engine attaches it to the module; DeepSpeed saves it in every model-state file, and its converter reads it there.
"""

from __future__ import annotations

import re

from deepspeed.checkpoint import constants as uc

_REPLICATED = (
    r".*input_layernorm\.weight$",
    r".*pre_mlp_layernorm\.weight$",
    r".*final_layernorm\.weight$",
    r".*linear_qkv\.layer_norm_weight$",
    r".*linear_fc1\.layer_norm_weight$",
)
_ROW_PARALLEL = (r".*linear_proj\.weight$", r".*linear_fc2\.weight$")
_GATE_UP = (r".*linear_fc1\.weight$",)


def universal_checkpoint_info(names) -> dict:
    """The info for a model with these parameter names; only patterns that match one of them (DeepSpeed's
    converter refuses a pattern that matches nothing)."""
    names = list(names)

    def present(patterns):
        return [p for p in patterns if any(re.match(p, n) for n in names)]

    return {
        uc.UNIVERSAL_CHECKPOINT_VERSION_KEY: uc.UNIVERSAL_CHECKPOINT_VERSION_VALUE,
        uc.TP_REPLICATED_PARAMETER_PATTERNS: present(_REPLICATED),
        uc.PARAMETER_WITH_ROW_PARALLELISM_PATTERNS: present(_ROW_PARALLEL),
        uc.PARAMETER_WITH_2_SUB_PARAMS_CAT_DIM_0: present(_GATE_UP),
    }


def attach(model) -> None:
    """DeepSpeed reads the info from the module it wraps when it saves a checkpoint."""
    setattr(model, uc.UNIVERSAL_CHECKPOINT_INFO, universal_checkpoint_info(n for n, _ in model.named_parameters()))
