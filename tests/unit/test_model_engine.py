"""Schedule, weight-decay groups, model shapes, parameter counts and layer kernels: one process, no launcher."""

import math
import re

import pytest
import torch

from megarecipe.config import ModelConfig, load_config
from megarecipe.model.llama import count_params
from megarecipe.parallel.engine import lr_factor, param_groups


def test_schedule_warmup_then_cosine_to_zero():
    total, warmup = 1000, 10
    f = [lr_factor(s, total, warmup) for s in range(total)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(f[:warmup], f[1:warmup], strict=False))
    assert all(a >= b for a, b in zip(f[warmup:], f[warmup + 1 :], strict=False))
    mid = warmup + (total - warmup) // 2
    assert f[mid] == pytest.approx(0.5, abs=2e-3)
    assert f[-1] < 1e-4 and lr_factor(total, total, warmup) == 0.0


def test_schedule_without_warmup():
    assert lr_factor(0, 100, 0) == 1.0
    assert lr_factor(50, 100, 0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


@pytest.mark.parametrize("name,nominal", [("150m", 150e6), ("300m", 300e6), ("600m", 600e6), ("1.4b", 1.4e9)])
def test_paper_presets_have_their_nominal_size(name, nominal):
    cfg = load_config(f"configs/{name}.yaml")
    total, non_embedding = count_params(cfg.model, 128256)  # the paper's Llama-3 vocabulary
    assert abs(total - nominal) / nominal < 0.05
    assert total - non_embedding == 2 * 128256 * cfg.model.hidden_size


@pytest.mark.parametrize(
    "shape",
    [
        dict(),
        dict(num_layers=3, hidden_size=96, num_attention_heads=6, num_query_groups=3, ffn_hidden_size=256),
        dict(num_layers=1, hidden_size=64, num_attention_heads=4, num_query_groups=4, ffn_hidden_size=128),
    ],
)
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
    assert sizes["output_layer.weight"] == (512, m.hidden_size)  # untied head
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
    import megatron.core.tensor_parallel.random as mp_random

    from megarecipe.parallel import cpu_compat

    assert cpu_compat.needed() == (not torch.cuda.is_available())
    assert hasattr(mp_random, "_get_cuda_rng_state") and hasattr(mp_random, "_set_cuda_rng_state")


def _forward_backward(model, tokens, targets):
    positions = torch.arange(tokens.shape[1]).unsqueeze(0).expand_as(tokens)
    model.zero_grad()
    logits = model(tokens, positions, None)
    loss = model(tokens, positions, None, labels=targets).float().mean()
    loss.backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize(
    "shape",
    [
        dict(init_std=0.2),  # 4 heads in 2 groups
        dict(num_query_groups=4, init_std=0.2, recompute="selective"),
    ],
)
def test_fused_attention_kernels_equal_the_local_reference(megatron_world, shape):
    """model.kernels=sdpa holds the local spec's weights under the same names and computes the same function."""
    from megarecipe.model.llama import build_model

    m = ModelConfig(seq_len=32, **shape)
    local = build_model(m, 512, kernels="local")
    fused = build_model(m, 512, kernels="sdpa")
    fused.load_state_dict(local.state_dict(), strict=True)
    assert type(fused.decoder.layers[0].self_attention.core_attention).__name__ == "SDPAttention"
    gen = torch.Generator().manual_seed(3)
    tokens, targets = (torch.randint(0, 512, (2, 32), generator=gen) for _ in range(2))
    want_logits, want_grads = _forward_backward(local, tokens, targets)
    logits, grads = _forward_backward(fused, tokens, targets)
    assert want_logits.std() > 0.1  # a signal large enough for the comparison to mean something
    torch.testing.assert_close(logits, want_logits, rtol=1e-4, atol=1e-4)  # fp32 rounding, logits ~O(1)
    for name, grad in want_grads.items():
        assert (grads[name] - grad).norm() <= 1e-4 * grad.norm(), name


def test_transformer_engine_norm_names_follow_megatrons_own_map(megatron_world):
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    from megarecipe.model.convert import canonical_name, te_name
    from megarecipe.model.llama import build_model

    key_map = get_gpt_layer_local_spec(normalization="RMSNorm").submodules.sharded_state_dict_keys_map
    assert len(key_map) == 2
    for local, te in key_map.items():
        name = f"decoder.layers.11.{local}weight"
        assert te_name(name) == f"decoder.layers.11.{te}weight" and canonical_name(te_name(name)) == name
    names = [n for n, _ in build_model(ModelConfig(), 512).named_parameters()]
    assert [canonical_name(n) for n in names] == names  # local names are canonical already
    assert sum(te_name(n) != n for n in names) == 2 * ModelConfig().num_layers


def test_cosine_ends_at_the_minimum_ratio():
    f = [lr_factor(s, 100, 10, "cosine", min_ratio=0.1) for s in range(101)]
    assert f[9] == pytest.approx(1.0) and f[100] == pytest.approx(0.1)
    assert f[55] == pytest.approx(0.1 + 0.9 * 0.5, abs=1e-9)
    assert min(f) == pytest.approx(0.1)


def test_wsd_is_stable_then_decays_linearly():
    total, warmup = 110, 10  # decay_frac 0.2 of the 100 post-warm-up steps: the last 20
    f = [lr_factor(s, total, warmup, "wsd", min_ratio=0.0, decay_frac=0.2) for s in range(total + 1)]
    assert f[0] == pytest.approx(0.1)
    assert f[10:91] == [1.0] * 81
    assert f[100] == pytest.approx(0.5) and f[110] == 0.0
    assert all(a > b for a, b in zip(f[90:], f[91:], strict=False))
    assert lr_factor(110, total, warmup, "wsd", min_ratio=0.25) == pytest.approx(0.25)


def test_schedule_settings():
    from megarecipe.config import ConfigError, resolve_layout, run_settings

    default = run_settings(load_config("configs/tiny.yaml"))["optim"]
    # unchanged for a cosine run to zero: its settings hash and resume key are what they were
    assert not {"schedule", "min_lr_ratio", "decay_frac"} & set(default)
    wsd = run_settings(load_config("configs/tiny.yaml", ["optim.schedule=wsd", "optim.min_lr_ratio=0.1"]))["optim"]
    assert (wsd["schedule"], wsd["min_lr_ratio"], wsd["decay_frac"]) == ("wsd", 0.1, 0.2)
    for bad, fragment in (
        ("optim.schedule=linear", "use cosine or wsd"),
        ("optim.min_lr_ratio=2", "[0, 1]"),
        ("optim.decay_frac=0", "(0, 1]"),
    ):
        with pytest.raises(ConfigError, match=re.escape(fragment)):
            resolve_layout(load_config("configs/tiny.yaml", [bad]), world_size=1)


def test_engine_schedule_follows_the_config():
    from megarecipe.config import resolve_layout
    from megarecipe.parallel.engine import lr_schedule

    cfg = load_config("configs/tiny.yaml", ["optim.schedule=wsd", "optim.min_lr_ratio=0.1", "optim.warmup_frac=0"])
    layout = resolve_layout(cfg, world_size=1)
    layout.total_steps = 50
    f = lr_schedule(cfg, layout)
    assert [f(s) for s in (0, 39, 45, 50)] == pytest.approx([1.0, 1.0, 0.1 + 0.9 * 0.5, 0.1])
