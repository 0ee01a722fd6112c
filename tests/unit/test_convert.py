"""Tensor-parallel split and merge of canonical weights; pipeline layer renumbering. Pure tensors: the check
against real TP=2 megatron shards is tests/distributed/test_convert_tp.py."""

import re

import pytest
import torch

from megarecipe.config import ModelConfig
from megarecipe.model.convert import global_layer_name, merge_tensor_parallel, split_tensor_parallel
from megarecipe.model.reference import Llama

STATE = Llama(ModelConfig(num_attention_heads=8, num_query_groups=4), 512).state_dict()
KINDS = [
    "embedding.word_embeddings.weight",
    "decoder.layers.0.input_layernorm.weight",
    "decoder.layers.0.self_attention.linear_qkv.weight",
    "decoder.layers.0.self_attention.linear_proj.weight",
    "decoder.layers.1.pre_mlp_layernorm.weight",
    "decoder.layers.1.mlp.linear_fc1.weight",
    "decoder.layers.1.mlp.linear_fc2.weight",
    "decoder.final_layernorm.weight",
    "output_layer.weight",
]


def test_every_parameter_kind_is_covered():
    def kind(name):
        return re.sub(r"layers\.\d+\.", "layers.N.", name)

    assert {kind(k) for k in STATE} == {kind(k) for k in KINDS}


@pytest.mark.parametrize("tp", [1, 2, 4])
@pytest.mark.parametrize("name", KINDS)
def test_split_then_merge_is_identity(name, tp):
    full = torch.randn_like(STATE[name])
    shards = split_tensor_parallel(name, full, tp)
    assert len(shards) == tp and all(s.numel() == full.numel() // (tp if full.ndim == 2 else 1) for s in shards)
    assert torch.equal(merge_tensor_parallel(name, shards), full)
    assert all(
        torch.equal(a, b)
        for a, b in zip(split_tensor_parallel(name, merge_tensor_parallel(name, shards), tp), shards, strict=True)
    )


def rows(n: int, start: float = 0) -> torch.Tensor:
    """A [n, 1] weight whose row i holds start + i, so a shard shows which rows it got."""
    return start + torch.arange(float(n)).view(n, 1)


def test_fc1_shards_hold_their_gate_and_up_slices():
    gate, up = rows(4), rows(4, 100)
    first, second = split_tensor_parallel("mlp.linear_fc1.weight", torch.cat([gate, up]), 2)
    assert first.flatten().tolist() == [0, 1, 100, 101] and second.flatten().tolist() == [2, 3, 102, 103]


def test_qkv_shards_hold_whole_query_groups():
    # 4 heads in 2 groups, head_dim 1: rows are [q0 q1 k0 v0 | q2 q3 k1 v1]
    first, second = split_tensor_parallel("self_attention.linear_qkv.weight", rows(8), 2)
    assert first.flatten().tolist() == [0, 1, 2, 3] and second.flatten().tolist() == [4, 5, 6, 7]


def test_row_parallel_splits_columns_and_vocab_splits_rows():
    proj = torch.arange(8.0).view(2, 4)
    assert [s.tolist() for s in split_tensor_parallel("self_attention.linear_proj.weight", proj, 2)] == [
        [[0, 1], [4, 5]],
        [[2, 3], [6, 7]],
    ]
    assert split_tensor_parallel("mlp.linear_fc2.weight", proj, 2)[1].tolist() == [[2, 3], [6, 7]]
    assert split_tensor_parallel("output_layer.weight", rows(4), 2)[1].flatten().tolist() == [2, 3]
    assert split_tensor_parallel("embedding.word_embeddings.weight", rows(4), 2)[1].flatten().tolist() == [2, 3]


def test_replicated_params_must_agree():
    assert torch.equal(merge_tensor_parallel("decoder.final_layernorm.weight", [torch.ones(4)] * 2), torch.ones(4))
    with pytest.raises(ValueError, match="differs across tensor-parallel ranks"):
        merge_tensor_parallel("decoder.final_layernorm.weight", [torch.ones(4), torch.zeros(4)])


def test_uneven_split_is_refused():
    with pytest.raises(ValueError, match="not divisible by tp=4"):
        split_tensor_parallel("mlp.linear_fc1.weight", torch.zeros(12, 2), 4)  # 6 gate rows over 4 ranks
    with pytest.raises(ValueError, match="size 3 along dim 1 is not divisible by tp=2"):
        split_tensor_parallel("mlp.linear_fc2.weight", torch.zeros(2, 3), 2)


def test_global_layer_names():
    assert global_layer_name("decoder.layers.1.mlp.linear_fc1.weight", 6) == "decoder.layers.7.mlp.linear_fc1.weight"
    name = "decoder.layers.12.input_layernorm.weight"
    assert global_layer_name(name, 0) == name
    assert global_layer_name("decoder.final_layernorm.weight", 6) == "decoder.final_layernorm.weight"
    assert global_layer_name("output_layer.weight", 6) == "output_layer.weight"
