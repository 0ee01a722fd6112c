"""The same Llama in plain PyTorch: no megatron, no DeepSpeed.

Parameter names and shapes are megatron's canonical (TP=1, PP=1) ones, so an export loads with
`load_state_dict(strict=True)`. The recipe tools run exported models with it and the throughput benchmark
uses it as the plain reference. Layouts follow megatron-core 0.16 (checked by tests/unit/test_reference.py):
the fused QKV rows are grouped per kv head as [queries of the group; key; value], the fused MLP input rows
are [gate; up], RoPE rotates halves (not interleaved pairs), norms are torch RMSNorm with weights at 1.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from megarecipe.config import ModelConfig


def rope_tables(seq_len: int, head_dim: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return x * cos.to(x.dtype) + torch.cat([-second, first], dim=-1) * sin.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, m: ModelConfig):
        super().__init__()
        self.heads, self.groups = m.num_attention_heads, m.num_query_groups
        self.head_dim = m.hidden_size // m.num_attention_heads
        self.linear_qkv = nn.Linear(m.hidden_size, (self.heads + 2 * self.groups) * self.head_dim, bias=False)
        self.linear_proj = nn.Linear(m.hidden_size, m.hidden_size, bias=False)

    def forward(self, x, cos, sin, cache: LayerCache | None = None):
        b, s, _ = x.shape
        per_group = self.heads // self.groups
        qkv = self.linear_qkv(x).view(b, s, self.groups, per_group + 2, self.head_dim)
        q = qkv[:, :, :, :per_group].reshape(b, s, self.heads, self.head_dim).transpose(1, 2)
        k = qkv[:, :, :, per_group].transpose(1, 2)
        v = qkv[:, :, :, per_group + 1].transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        mask, causal = None, True
        if cache is not None:
            past = cache.length
            k, v = cache.append(k, v)
            if past:  # the new queries see every cached position and the new ones causally
                causal = False
                mask = torch.ones(s, past + s, dtype=torch.bool, device=x.device).tril(past) if s > 1 else None
        # enable_gqa pairs query head i with kv head i // per_group: the grouping of the fused rows above
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=per_group > 1)
        return self.linear_proj(out.transpose(1, 2).reshape(b, s, -1))


class LayerCache:
    """One layer's keys and values of the positions seen so far, [b, kv heads, positions, head_dim]."""

    def __init__(self):
        self.k = self.v = None

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.shape[2]

    def append(self, k, v):
        self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
        return self.k, self.v


class KVCache:
    """The per-layer caches of one batch of sequences being generated; `Llama.forward(tokens, cache)` reads the
    position offset from it and appends the new positions."""

    def __init__(self, num_layers: int):
        self.layers = [LayerCache() for _ in range(num_layers)]

    @property
    def length(self) -> int:
        return self.layers[0].length


class MLP(nn.Module):
    def __init__(self, m: ModelConfig):
        super().__init__()
        self.linear_fc1 = nn.Linear(m.hidden_size, 2 * m.ffn_hidden_size, bias=False)
        self.linear_fc2 = nn.Linear(m.ffn_hidden_size, m.hidden_size, bias=False)

    def forward(self, x):
        gate, up = self.linear_fc1(x).chunk(2, dim=-1)
        return self.linear_fc2(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, m: ModelConfig):
        super().__init__()
        self.input_layernorm = nn.RMSNorm(m.hidden_size, eps=m.norm_eps)
        self.self_attention = Attention(m)
        self.pre_mlp_layernorm = nn.RMSNorm(m.hidden_size, eps=m.norm_eps)
        self.mlp = MLP(m)

    def forward(self, x, cos, sin, cache: LayerCache | None = None):
        h = x + self.self_attention(self.input_layernorm(x), cos, sin, cache)
        return h + self.mlp(self.pre_mlp_layernorm(h))


# Two holder modules, only so that the parameter names are megatron's.
class Embedding(nn.Module):
    def __init__(self, vocab_size: int, hidden: int):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, hidden)


class Decoder(nn.Module):
    def __init__(self, m: ModelConfig):
        super().__init__()
        self.layers = nn.ModuleList(Block(m) for _ in range(m.num_layers))
        self.final_layernorm = nn.RMSNorm(m.hidden_size, eps=m.norm_eps)


class Llama(nn.Module):
    def __init__(self, m: ModelConfig, vocab_size: int):
        super().__init__()
        self.config, self.vocab_size = m, vocab_size
        self.embedding = Embedding(vocab_size, m.hidden_size)
        self.decoder = Decoder(m)
        self.output_layer = nn.Linear(m.hidden_size, vocab_size, bias=False)
        for p in self.parameters():
            if p.ndim == 2:
                nn.init.normal_(p, std=m.init_std)

    def forward(self, tokens: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """tokens [b, s] -> logits [b, s, vocab]. With a cache (see KVCache), tokens are the positions after the
        cached ones, and their keys and values are added to it."""
        m = self.config
        past = cache.length if cache is not None else 0
        cos, sin = rope_tables(
            past + tokens.shape[1], m.hidden_size // m.num_attention_heads, m.rope_theta, tokens.device
        )
        cos, sin = cos[past:], sin[past:]
        x = self.embedding.word_embeddings(tokens)
        for i, layer in enumerate(self.decoder.layers):
            x = layer(x, cos, sin, cache.layers[i] if cache is not None else None)
        return self.output_layer(self.decoder.final_layernorm(x))

    def loss(self, tokens: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Cross-entropy in fp32; targets of -100 are ignored. reduction="none" gives it per token, flattened."""
        logits = self(tokens)
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction=reduction)
