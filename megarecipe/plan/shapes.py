"""The parameter tensors one rank holds under a TP/PP layout, in the order and groups the engine sees them."""

from __future__ import annotations

from dataclasses import dataclass

from megarecipe.config import ModelConfig


@dataclass(frozen=True)
class Tensor:
    name: str
    numel: int
    decay: bool  # the AdamW group: matrices decay, embeddings and norms do not (parallel/engine.py)


def stage_tensors(m: ModelConfig, vocab: int, tp: int, pp: int, stage: int) -> list[Tensor]:
    """Pipeline stage `stage` of `pp`, one tensor-parallel rank of `tp`."""
    h, f = m.hidden_size, m.ffn_hidden_size
    head_dim = h // m.num_attention_heads
    qkv_rows = (h + 2 * m.num_query_groups * head_dim) // tp
    layers = m.num_layers // pp
    out: list[Tensor] = []
    if stage == 0:
        out.append(Tensor("embedding.word_embeddings.weight", vocab // tp * h, False))
    for i in range(layers):
        prefix = f"decoder.layers.{i}."
        out += [
            Tensor(prefix + "input_layernorm.weight", h, False),
            Tensor(prefix + "self_attention.linear_proj.weight", h * (h // tp), True),
            Tensor(prefix + "self_attention.linear_qkv.weight", qkv_rows * h, True),
            Tensor(prefix + "pre_mlp_layernorm.weight", h, False),
            Tensor(prefix + "mlp.linear_fc1.weight", 2 * f // tp * h, True),
            Tensor(prefix + "mlp.linear_fc2.weight", h * (f // tp), True),
        ]
    if stage == pp - 1:
        out += [
            Tensor("decoder.final_layernorm.weight", h, False),
            Tensor("output_layer.weight", vocab // tp * h, True),
        ]
    return out


def largest_layer(tensors: list[Tensor]) -> int:
    """Elements of the biggest single module's weights (what ZeRO-3 gathers at once)."""
    return max((t.numel for t in tensors), default=0)
