"""Parameter and FLOP counts of the Llama shape, without building it (no megatron import)."""

from megarecipe.config import ModelConfig


def count_params(m: ModelConfig, vocab_size: int) -> tuple[int, int]:
    """(total, without the input embedding and output head) for the full, unsharded model."""
    h, f = m.hidden_size, m.ffn_hidden_size
    head_dim = h // m.num_attention_heads
    attention = h * (h + 2 * m.num_query_groups * head_dim) + h * h
    mlp = h * 2 * f + f * h
    per_layer = attention + mlp + 2 * h
    non_embedding = m.num_layers * per_layer + h
    return non_embedding + 2 * vocab_size * h, non_embedding


def flops_per_token(m: ModelConfig, vocab_size: int) -> float:
    """Model FLOPs to train on one token, as Megatron and torchtitan count them: 6N + 12 L h s.

    6N: each weight of a matmul is one multiply-add (2 FLOPs) forward and two backward; N counts the layers'
    weights and the output head but not the input embedding (a lookup) or the norms. 12 L h s: per layer, the
    scores QK^T and their product with V are 2 x 2 h s FLOPs forward per token over a window of s, x3 with the
    backward. The causal mask's unused half is counted, as both projects do, so MFU compares across them."""
    _, non_embedding = count_params(m, vocab_size)
    matmul_params = non_embedding + vocab_size * m.hidden_size
    return 6 * matmul_params + 12 * m.num_layers * m.hidden_size * m.seq_len
