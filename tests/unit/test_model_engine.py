"""Schedule, weight-decay groups, model shapes and parameter counts: one process, no launcher."""
import math
import os

import pytest
import torch

from megarecipe.config import ModelConfig, load_config
from megarecipe.model.llama import count_params
from megarecipe.parallel.engine import lr_factor, param_groups


@pytest.fixture(scope="module")
def megatron_world():
    from megarecipe.parallel import cpu_compat
    cpu_compat.apply()
    import torch.distributed as dist
    from megatron.core import parallel_state as ps, tensor_parallel
    from tests.helpers import free_port

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    dist.init_process_group("gloo", rank=0, world_size=1)
    ps.initialize_model_parallel()
    tensor_parallel.model_parallel_cuda_manual_seed(7)
    yield
    ps.destroy_model_parallel()
    dist.destroy_process_group()


def test_schedule_warmup_then_cosine_to_zero():
    total, warmup = 1000, 10
    f = [lr_factor(s, total, warmup) for s in range(total)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(f[:warmup], f[1:warmup], strict=False))
    assert all(a >= b for a, b in zip(f[warmup:], f[warmup + 1:], strict=False))
    mid = warmup + (total - warmup) // 2
    assert f[mid] == pytest.approx(0.5, abs=2e-3)
    assert f[-1] < 1e-4 and lr_factor(total, total, warmup) == 0.0


def test_schedule_without_warmup():
    assert lr_factor(0, 100, 0) == 1.0
    assert lr_factor(50, 100, 0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


@pytest.mark.parametrize("name,nominal", [("150m", 150e6), ("300m", 300e6), ("600m", 600e6), ("1.4b", 1.4e9)])
def test_paper_presets_have_their_nominal_size(name, nominal):
    cfg = load_config(f"configs/{name}.yaml")
    total, non_embedding = count_params(cfg.model, 128256)   # the paper's Llama-3 vocabulary
    assert abs(total - nominal) / nominal < 0.05
    assert total - non_embedding == 2 * 128256 * cfg.model.hidden_size


@pytest.mark.parametrize("shape", [
    dict(),
    dict(num_layers=3, hidden_size=96, num_attention_heads=6, num_query_groups=3, ffn_hidden_size=256),
    dict(num_layers=1, hidden_size=64, num_attention_heads=4, num_query_groups=4, ffn_hidden_size=128),
])
def test_megatron_model_matches_count_and_shapes(megatron_world, shape):
    from megarecipe.model.llama import build_model

    m = ModelConfig(**shape)
    model = build_model(m, 512)
    sizes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert sum(p.numel() for p in model.parameters()) == count_params(m, 512)[0]
    head_dim = m.hidden_size // m.num_attention_heads
    qkv = m.hidden_size + 2 * m.num_query_groups * head_dim
    assert sizes["decoder.layers.0.self_attention.linear_qkv.weight"] == (qkv, m.hidden_size)
    assert sizes["decoder.layers.0.mlp.linear_fc1.weight"] == (2 * m.ffn_hidden_size, m.hidden_size)
    assert sizes["output_layer.weight"] == (512, m.hidden_size)             # untied head
    assert not any("bias" in n for n in sizes)
    assert len([n for n in sizes if n.endswith("linear_qkv.weight")]) == m.num_layers
    matrices = [p for n, p in model.named_parameters() if p.ndim == 2]
    assert all(abs(p.std().item() - m.init_std) < 0.1 * m.init_std for p in matrices)


def test_decay_on_matrices_and_head_not_embeddings_or_norms(megatron_world):
    from megarecipe.model.llama import build_model

    model = build_model(ModelConfig(), 512)
    decay, no_decay = param_groups(model, 0.8)
    assert decay["weight_decay"] == 0.8 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in no_decay["params"]}
    assert "output_layer.weight" in decayed
    assert "embedding.word_embeddings.weight" in kept
    assert all("layernorm" in n for n in kept - {"embedding.word_embeddings.weight"})
    assert len(decayed) + len(kept) == len(names)
    assert {n for n in decayed if "linear" in n} == {n for n in names.values() if "linear" in n}


def test_cpu_layer_is_inactive_on_cuda_and_checks_its_targets():
    from megarecipe.parallel import cpu_compat
    import megatron.core.tensor_parallel.random as mp_random

    assert cpu_compat.needed() == (not torch.cuda.is_available())
    assert hasattr(mp_random, "_get_cuda_rng_state") and hasattr(mp_random, "_set_cuda_rng_state")
