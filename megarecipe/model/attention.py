"""Core attention through torch's fused scaled_dot_product_attention.

megatron-core's local DotProductAttention materialises the b * heads * s * s scores and probabilities; this
module computes the same function with torch's fused kernels instead (FlashAttention or memory-efficient
attention on CUDA, a tiled kernel on CPU), so activation memory grows with s, not s^2. It has no parameters:
a model built with it holds exactly the local spec's weights under the same names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from megatron.core.transformer.dot_product_attention import DotProductAttention
from megatron.core.transformer.enums import AttnMaskType


class SDPAttention(DotProductAttention):
    """Causal attention over this rank's heads: query [s, b, heads, d], key/value [s, b, groups, d] in,
    context [s, b, heads * d] out, as DotProductAttention."""

    def forward(
        self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None, packed_seq_params=None
    ):
        if packed_seq_params is not None or attention_bias is not None:
            raise NotImplementedError("SDPAttention takes neither packed sequences nor an attention bias")
        if (attn_mask_type or self.attn_mask_type) != AttnMaskType.causal or attention_mask is not None:
            raise NotImplementedError("SDPAttention computes causal self-attention without an explicit mask")
        if query.size(0) != key.size(0):
            raise NotImplementedError("SDPAttention needs as many keys as queries (no KV cache)")
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))  # [b, heads, s, d]
        per_group = self.num_attention_heads_per_partition // self.num_query_groups_per_partition
        if per_group > 1 and q.is_cuda and q.dtype == torch.float32:
            # on CUDA only FlashAttention (16-bit) and the unfused math kernel take grouped k/v; give fp32 the
            # memory-efficient kernel whole heads rather than fall back to the s x s math path
            k, v = (t.repeat_interleave(per_group, dim=1) for t in (k, v))
            per_group = 1
        context = F.scaled_dot_product_attention(
            q,
            k,
            v,
            is_causal=True,
            scale=self.softmax_scale,  # no dropout: the model config fixes it at 0
            enable_gqa=per_group > 1,
        )
        s, b = query.size(0), query.size(1)
        return context.permute(2, 0, 1, 3).reshape(s, b, self.hidden_size_per_partition)
