"""The plain-PyTorch Llama computes what the megatron-core model computes, from the same weights."""
import pytest
import torch

from megarecipe.config import ModelConfig, load_config
from megarecipe.model.convert import global_layer_name, merge_tensor_parallel, split_tensor_parallel
from megarecipe.model.export import load_export, write_export
from megarecipe.model.llama import count_params
from megarecipe.model.reference import Llama
from tests.unit.test_model_engine import megatron_world  # noqa: F401  (fixture)

SHAPES = [
    dict(),                                                                                   # GQA 4 heads / 2 groups
    dict(num_layers=2, hidden_size=64, num_attention_heads=4, num_query_groups=4, ffn_hidden_size=96),   # MHA
    dict(num_layers=3, hidden_size=96, num_attention_heads=6, num_query_groups=2, ffn_hidden_size=160,
         rope_theta=500000.0),
]


@pytest.mark.parametrize("shape", SHAPES)
def test_same_logits_and_loss_as_megatron(megatron_world, shape):  # noqa: F811
    from megarecipe.model.llama import build_model

    m = ModelConfig(**shape)
    mega = build_model(m, 384).eval()
    ref = Llama(m, 384).eval()
    ref.load_state_dict({n: p.detach() for n, p in mega.named_parameters()}, strict=True)
    tokens = torch.randint(0, 384, (3, 40), generator=torch.Generator().manual_seed(0))
    targets = torch.roll(tokens, -1, 1)
    positions = torch.arange(40).unsqueeze(0).expand(3, -1)
    with torch.no_grad():
        want = mega(tokens, positions, None)
        got = ref(tokens)
        assert got.shape == want.shape == (3, 40, 384)
        assert torch.allclose(got, want, atol=2e-5), (got - want).abs().max()
        per_token = mega(tokens, positions, None, labels=targets)
        assert torch.allclose(ref.loss(tokens, targets, reduction="none").view(3, 40), per_token, atol=2e-5)
    assert sum(p.numel() for p in ref.parameters()) == count_params(m, 384)[0]


def test_reference_init():
    m = ModelConfig()
    model = Llama(m, 512)
    for name, p in model.named_parameters():
        if p.ndim == 2:
            assert abs(p.std().item() - 0.02) < 0.002, name
        else:
            assert torch.all(p == 1), name


@pytest.mark.parametrize("name,shape", [
    ("decoder.layers.0.self_attention.linear_qkv.weight", (256, 128)),
    ("decoder.layers.3.self_attention.linear_proj.weight", (128, 128)),
    ("decoder.layers.1.mlp.linear_fc1.weight", (704, 128)),
    ("decoder.layers.1.mlp.linear_fc2.weight", (128, 352)),
    ("embedding.word_embeddings.weight", (512, 128)),
    ("output_layer.weight", (512, 128)),
    ("decoder.final_layernorm.weight", (128,)),
])
def test_split_then_merge_is_identity(name, shape):
    full = torch.randn(shape)
    shards = split_tensor_parallel(name, full, 2)
    assert torch.equal(merge_tensor_parallel(name, shards), full)


def test_fc1_shards_hold_their_gate_and_up_slices():
    gate, up = torch.arange(4.).view(4, 1), 100 + torch.arange(4.).view(4, 1)
    first, second = split_tensor_parallel("mlp.linear_fc1.weight", torch.cat([gate, up]), 2)
    assert first.flatten().tolist() == [0, 1, 100, 101] and second.flatten().tolist() == [2, 3, 102, 103]


def test_replicated_params_must_agree():
    with pytest.raises(ValueError, match="differs across tensor-parallel ranks"):
        merge_tensor_parallel("decoder.final_layernorm.weight", [torch.ones(4), torch.zeros(4)])


def test_global_layer_names():
    assert global_layer_name("decoder.layers.1.mlp.linear_fc1.weight", 6) == "decoder.layers.7.mlp.linear_fc1.weight"
    assert global_layer_name("output_layer.weight", 6) == "output_layer.weight"


def test_export_round_trip_and_errors(tmp_path):
    cfg = load_config("configs/tiny.yaml")
    model = Llama(cfg.model, 512)
    out = write_export(str(tmp_path / "export"), model.state_dict(), cfg, 512)
    loaded, cfg2, info = load_export(out)
    assert cfg2 == cfg and info["vocab_size"] == 512 and info["params"] == count_params(cfg.model, 512)[0]
    tokens = torch.randint(0, 512, (2, 16))
    with torch.no_grad():
        assert torch.equal(loaded(tokens), model.eval()(tokens))
    assert not (tmp_path / "export.tmp").exists()

    (tmp_path / "export" / "model.json").unlink()
    with pytest.raises(ValueError, match="model.json is missing"):
        load_export(out)
    bad_cfg = load_config("configs/tiny.yaml", ["model.hidden_size=64"])
    write_export(str(tmp_path / "bad"), model.state_dict(), bad_cfg, 512)
    with pytest.raises(ValueError, match="has shape"):
        load_export(str(tmp_path / "bad"))
