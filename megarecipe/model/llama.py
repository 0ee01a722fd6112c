"""The Llama of the paper on megatron-core: RMSNorm, SwiGLU, RoPE, grouped-query attention, no biases,
untied embeddings, every weight initialised from N(0, 0.02).

model.kernels picks the layer implementation at run time:
  local  megatron-core's own modules, unfused: portable and the numerical reference (auto on CPU)
  sdpa   the same modules and weights with torch's fused attention (FlashAttention on CUDA; auto on CUDA)
  te     megatron-core's Transformer Engine spec: fused norm + linear and TE attention (CUDA with
         transformer_engine); its norms live inside the linears, so its parameter names differ (convert.py)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from megatron.core import parallel_state
from megatron.core.models.gpt import GPTModel
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_config import TransformerConfig
from megatron.core.utils import init_method_normal

from megarecipe.config import ModelConfig
from megarecipe.model.attention import SDPAttention
from megarecipe.model.size import count_params, flops_per_token  # noqa: F401  (re-exported)

# model.recompute -> TransformerConfig: "selective" recomputes core attention (the b*a*s*s scores), "full"
# keeps only each layer's input and recomputes the layer in backward.
RECOMPUTE = {
    "none": {},
    "selective": {"recompute_granularity": "selective"},
    "full": {"recompute_granularity": "full", "recompute_method": "uniform", "recompute_num_layers": 1},
}


def transformer_config(m: ModelConfig, tp: int = 1, pp: int = 1, bf16: bool = False) -> TransformerConfig:
    init = init_method_normal(m.init_std)
    return TransformerConfig(
        num_layers=m.num_layers,
        hidden_size=m.hidden_size,
        ffn_hidden_size=m.ffn_hidden_size,
        num_attention_heads=m.num_attention_heads,
        num_query_groups=m.num_query_groups,
        normalization="RMSNorm",
        layernorm_epsilon=m.norm_eps,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method=init,
        output_layer_init_method=init,
        init_method_std=m.init_std,
        # megatron's fused kernels need CUDA extensions; the unfused paths are exact and portable
        bias_activation_fusion=False,
        masked_softmax_fusion=False,
        bias_dropout_fusion=False,
        apply_rope_fusion=False,
        persist_layer_norm=False,
        gradient_accumulation_fusion=False,
        use_cpu_initialization=True,
        params_dtype=torch.float32,
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        pipeline_dtype=torch.bfloat16 if bf16 else torch.float32,
        bf16=bf16,
        **RECOMPUTE[m.recompute],
    )


def layer_spec(kernels: str) -> ModuleSpec:
    if kernels == "te":
        from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_with_transformer_engine_spec

        return get_gpt_layer_with_transformer_engine_spec()
    spec = get_gpt_layer_local_spec(normalization="RMSNorm")
    if kernels == "sdpa":
        spec.submodules.self_attention.submodules.core_attention = SDPAttention
    return spec


def build_model(m: ModelConfig, vocab_size: int, bf16: bool = False, kernels: str = "local") -> GPTModel:
    """This rank's part of the model under the parallel state already initialised; `kernels` is resolved
    (local, sdpa or te: config.resolve_kernels)."""
    tp = parallel_state.get_tensor_model_parallel_world_size()
    pp = parallel_state.get_pipeline_model_parallel_world_size()
    return GPTModel(
        config=transformer_config(m, tp, pp, bf16),
        transformer_layer_spec=layer_spec(kernels),
        vocab_size=vocab_size,
        max_sequence_length=m.seq_len,
        position_embedding_type="rope",
        rotary_base=m.rope_theta,
        share_embeddings_and_output_weights=False,
        pre_process=parallel_state.is_pipeline_first_stage(),
        post_process=parallel_state.is_pipeline_last_stage(),
    )
