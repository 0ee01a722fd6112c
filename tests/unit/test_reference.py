"""The plain-PyTorch Llama computes what the megatron-core model computes, from the same weights, and the
export round-trips through it."""

import pytest
import torch

from megarecipe.config import PRESET_DIR, ModelConfig, load_config, save_config
from megarecipe.data.tokenizer import file_sha256
from megarecipe.model.export import load_export, write_export
from megarecipe.model.llama import count_params
from megarecipe.model.reference import Llama

TINY = str(PRESET_DIR / "tiny.yaml")

# megatron's names for ModelConfig() at vocab 2048, written out so that a change on either side shows
CANONICAL = {"embedding.word_embeddings.weight": (2048, 128)}
for i in range(2):
    CANONICAL.update(
        {
            f"decoder.layers.{i}.input_layernorm.weight": (128,),
            f"decoder.layers.{i}.self_attention.linear_qkv.weight": (256, 128),
            f"decoder.layers.{i}.self_attention.linear_proj.weight": (128, 128),
            f"decoder.layers.{i}.pre_mlp_layernorm.weight": (128,),
            f"decoder.layers.{i}.mlp.linear_fc1.weight": (704, 128),
            f"decoder.layers.{i}.mlp.linear_fc2.weight": (128, 352),
        }
    )
CANONICAL.update({"decoder.final_layernorm.weight": (128,), "output_layer.weight": (2048, 128)})

# init_std 0.2 (not 0.02) so that attention is far from uniform and a RoPE or head-layout slip shows
SHAPES = {
    "default": dict(init_std=0.2),  # GQA 4 heads / 2 groups
    "mha": dict(hidden_size=64, num_attention_heads=4, num_query_groups=4, ffn_hidden_size=96, init_std=0.2),
    "gqa3": dict(
        num_layers=3,
        hidden_size=96,
        num_attention_heads=6,
        num_query_groups=2,
        ffn_hidden_size=160,
        rope_theta=500000.0,
        init_std=0.2,
    ),
    "mqa": dict(
        num_layers=1, hidden_size=64, num_attention_heads=4, num_query_groups=1, ffn_hidden_size=64, init_std=0.2
    ),
}


def megatron_and_reference(m: ModelConfig, vocab: int):
    from megarecipe.model.llama import build_model

    mega = build_model(m, vocab).eval()
    # norms start at 1 in both; perturb them so that a norm applied in the wrong place shows
    with torch.no_grad():
        for p in mega.parameters():
            if p.ndim == 1:
                p.uniform_(0.5, 1.5)
    ref = Llama(m, vocab).eval()
    ref.load_state_dict({n: p.detach() for n, p in mega.named_parameters()}, strict=True)
    return mega, ref


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_same_logits_and_loss_as_megatron(megatron_world, shape):
    m, vocab, b, s = ModelConfig(**shape), 384, 3, 40
    mega, ref = megatron_and_reference(m, vocab)
    gen = torch.Generator().manual_seed(0)
    tokens, targets = torch.randint(0, vocab, (b, s), generator=gen), torch.randint(0, vocab, (b, s), generator=gen)
    positions = torch.arange(s).unsqueeze(0).expand(b, -1)
    with torch.no_grad():
        want, got = mega(tokens, positions, None), ref(tokens)
        assert got.shape == want.shape == (b, s, vocab)
        # logits have std ~2: fp32 summation-order noise is ~3e-5, while any layout slip (interleaved RoPE,
        # gate/up swapped, ungrouped QKV, theta or softmax scale off by 1%) moves them by 0.05 or more
        assert want.std() > 1
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)
        per_token = mega(tokens, positions, None, labels=targets)
        assert per_token.shape == (b, s)
        torch.testing.assert_close(
            ref.loss(tokens, targets, reduction="none").view(b, s), per_token, atol=1e-4, rtol=1e-5
        )
        torch.testing.assert_close(ref.loss(tokens, targets), per_token.mean(), atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_count_params_is_both_models_numel(megatron_world, shape):
    from megarecipe.model.llama import build_model

    m = ModelConfig(**shape)
    total, non_embedding = count_params(m, 384)
    assert sum(p.numel() for p in build_model(m, 384).parameters()) == total
    assert sum(p.numel() for p in Llama(m, 384).parameters()) == total
    assert total - non_embedding == 2 * 384 * m.hidden_size


def test_names_and_shapes_are_megatrons(megatron_world):
    from megarecipe.model.llama import build_model

    mega = build_model(ModelConfig(), 2048)
    assert {k: tuple(v.shape) for k, v in mega.named_parameters()} == CANONICAL
    assert {k: tuple(v.shape) for k, v in Llama(ModelConfig(), 2048).state_dict().items()} == CANONICAL
    assert all(torch.all(p == 1) for n, p in mega.named_parameters() if p.ndim == 1)  # megatron's norms start at 1


def test_reference_init():
    torch.manual_seed(0)
    model = Llama(ModelConfig(), 512)
    for name, p in model.named_parameters():
        if p.ndim == 2:  # >= 16k entries each: the std's standard error is ~1e-4
            assert abs(p.std().item() - 0.02) < 5e-4 and abs(p.mean().item()) < 5e-4, name
        else:
            assert torch.all(p == 1), name


def test_causal():
    model = Llama(ModelConfig(init_std=0.2), 256).eval()
    tokens = torch.randint(0, 256, (2, 20))
    changed = tokens.clone()
    changed[:, 12:] = (changed[:, 12:] + 1) % 256
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    torch.testing.assert_close(a[:, :12], b[:, :12])
    assert not torch.allclose(a[:, 12:], b[:, 12:])


def test_loss_ignores_padding_targets():
    model = Llama(ModelConfig(), 256).eval()
    tokens, targets = torch.randint(0, 256, (2, 16)), torch.randint(0, 256, (2, 16))
    padded = targets.clone()
    padded[1] = -100
    with torch.no_grad():
        torch.testing.assert_close(model.loss(tokens, padded), model.loss(tokens[:1], targets[:1]))


def test_export_round_trip(tmp_path):
    cfg = load_config(TINY, ["model.vocab_size=512"])
    model = Llama(cfg.model, 512).eval()
    tokenizer = tmp_path / "tok.model"
    tokenizer.write_bytes(b"not really sentencepiece")
    tokenizer.chmod(0o600)  # the copy in the export takes the umask's mode, not the source's
    out = write_export(str(tmp_path / "export"), model.state_dict(), cfg, 512, tokenizer_path=str(tokenizer))
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == [
        "config.yaml",
        "model.json",
        "model.safetensors",
        "tokenizer.model",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "tok.model"]  # no build dir left
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in (tmp_path / "export").iterdir()}
    (tmp_path / "plain").write_text("")
    assert set(modes.values()) == {oct((tmp_path / "plain").stat().st_mode & 0o777)}, modes  # as the umask says

    loaded, cfg2, info = load_export(out)
    assert cfg2 == cfg
    total, non_embedding = count_params(cfg.model, 512)
    assert info == {
        "format": 1,
        "vocab_size": 512,
        "params": total,
        "params_non_embedding": non_embedding,
        "tokenizer_sha256": file_sha256(str(tokenizer)),
    }
    assert not loaded.training
    tokens = torch.randint(0, 512, (2, 16))
    with torch.no_grad():
        assert torch.equal(loaded(tokens), model(tokens))

    # a second export to the same place replaces the first whole
    write_export(out, Llama(cfg.model, 512).state_dict(), cfg, 512)
    assert not (tmp_path / "export" / "tokenizer.model").exists() and load_export(out)[2]["tokenizer_sha256"] is None


def test_export_errors(tmp_path):
    cfg = load_config(TINY)
    state = Llama(cfg.model, 512).state_dict()
    with pytest.raises(ValueError, match="no such export directory"):
        load_export(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match=r"write_export: 6 weight\(s\) missing, e.g. decoder.layers.1."):
        write_export(str(tmp_path / "partial"), {k: v for k, v in state.items() if "layers.1." not in k}, cfg, 512)
    assert not (tmp_path / "partial").exists()
    with pytest.raises(ValueError, match="unexpected weight module.output_layer.weight"):
        write_export(
            str(tmp_path / "x"), {("module." + k if "output" in k else k): v for k, v in state.items()}, cfg, 512
        )

    out = write_export(str(tmp_path / "export"), state, cfg, 512)
    (tmp_path / "export" / "model.json").unlink()
    with pytest.raises(ValueError, match="model.json is missing"):
        load_export(out)

    # weights and config from different runs: the config says hidden 64, the weights have 128
    write_export(str(tmp_path / "bad"), state, cfg, 512)
    save_config(load_config(TINY, ["model.hidden_size=64"]), str(tmp_path / "bad" / "config.yaml"))
    with pytest.raises(
        ValueError,
        match=r"weight has shape .*128.* but the config \(vocab 512\) implies .*64.*; the "
        r"model config and the weights come from different runs",
    ):
        load_export(str(tmp_path / "bad"))


def test_megatron_state_dict_exports_and_loads(megatron_world, tmp_path):
    cfg = load_config(TINY, ["model.init_std=0.2"])
    mega, _ = megatron_and_reference(cfg.model, 384)
    out = write_export(str(tmp_path / "export"), mega.state_dict(), cfg, 384)
    loaded, _, _ = load_export(out)
    tokens = torch.randint(0, 384, (2, 24))
    with torch.no_grad():
        want = mega(tokens, torch.arange(24).unsqueeze(0).expand(2, -1), None)
        torch.testing.assert_close(loaded(tokens), want, atol=1e-4, rtol=1e-5)
