"""model.init_from: a Hugging Face Llama made here initialises the model; its logits are transformers'."""

import json
import os
import shutil

import pytest
import torch

from megarecipe.config import ConfigError, load_config
from megarecipe.preflight import check_run

transformers = pytest.importorskip("transformers")

SHAPE = dict(
    vocab_size=2048,
    hidden_size=64,
    intermediate_size=176,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
    rope_parameters={"rope_type": "default", "rope_theta": 50000.0},
    hidden_act="silu",
)


def make_hf_llama(path, tokenizer_model, seed=0, **changes) -> str:
    """A random LlamaForCausalLM with norm weights away from 1, saved as from_pretrained loads it."""
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**SHAPE, **changes}))
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0, 0.1)
    model.save_pretrained(path)
    if tokenizer_model:
        shutil.copy(tokenizer_model, os.path.join(path, "tokenizer.model"))
    return str(path)


@pytest.fixture(scope="module")
def hf_llama(tmp_path_factory, tiny_data):
    return make_hf_llama(tmp_path_factory.mktemp("hf") / "llama", os.path.join(tiny_data, "tokenizer.model"))


def config(hf_dir, data_dir, *extra):
    return load_config(
        "configs/tiny.yaml", [f"model.init_from={hf_dir}", f"data.dir={data_dir}", "data.train_tokens=20k", *extra]
    )


def test_shape_comes_from_config_json(hf_llama, tiny_data):
    cfg = config(hf_llama, tiny_data, "model.num_layers=7")
    layout = check_run(cfg, world_size=1)
    m = cfg.model
    assert (m.num_layers, m.hidden_size, m.ffn_hidden_size, m.num_attention_heads, m.num_query_groups) == (
        2,
        64,
        176,
        4,
        2,
    )
    assert (m.rope_theta, m.norm_eps, layout.vocab_size) == (50000.0, 1e-6, 2048)


def test_logits_equal_transformers_at_step_0(megatron_world, hf_llama, tiny_data):
    from megarecipe.model.llama import build_model
    from megarecipe.parallel.hf_init import load_hf_weights

    cfg = config(hf_llama, tiny_data, "model.seq_len=48")
    layout = check_run(cfg, world_size=1)
    ours = build_model(cfg.model, layout.vocab_size).eval()
    load_hf_weights(ours, hf_llama, cfg.model)
    theirs = transformers.LlamaForCausalLM.from_pretrained(hf_llama, dtype=torch.float32).eval()
    tokens = torch.randint(0, 2000, (2, 48), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = theirs(tokens).logits
        got = ours(tokens, torch.arange(48).unsqueeze(0).expand(2, -1), None)
    assert want.std() > 0.1
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_tied_embeddings_become_the_output_layer(megatron_world, tmp_path, tiny_data):
    from megarecipe.model.llama import build_model
    from megarecipe.parallel.hf_init import load_hf_weights

    hf_dir = make_hf_llama(tmp_path / "tied", os.path.join(tiny_data, "tokenizer.model"), tie_word_embeddings=True)
    cfg = config(hf_dir, tiny_data)
    ours = build_model(cfg.model, check_run(cfg, world_size=1).vocab_size)
    load_hf_weights(ours, hf_dir, cfg.model)
    assert torch.equal(ours.output_layer.weight, ours.embedding.word_embeddings.weight)


def test_what_cannot_be_initialised_is_one_line(hf_llama, tiny_data, tmp_path):
    def refused(hf_dir, fragment):
        with pytest.raises(ConfigError, match=fragment) as e:
            check_run(config(hf_dir, tiny_data), world_size=1)
        assert "\n" not in str(e.value) and str(e.value).startswith(("model.init_from=", "data.dir="))

    refused(tmp_path / "nothing", "no config.json")
    other = tmp_path / "other-tokenizer"
    shutil.copytree(hf_llama, other)
    (other / "tokenizer.model").write_bytes(b"another tokenizer")
    refused(other, "prepared with another tokenizer")
    os.remove(other / "tokenizer.model")
    refused(other, "no tokenizer.model")
    scaled = tmp_path / "scaled"
    shutil.copytree(hf_llama, scaled)
    meta = json.loads((scaled / "config.json").read_text())
    meta["rope_parameters"] = {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}
    (scaled / "config.json").write_text(json.dumps(meta))
    refused(scaled, "RoPE scaling 'llama3'")
    (scaled / "config.json").write_text(json.dumps({**meta, "model_type": "mistral"}))
    refused(scaled, "not a Llama")


def test_a_llama_dir_with_only_tokenizer_json(tmp_path, tiny_data):
    """As Llama 3 ships: tokenizer.json and a config naming EOS, no sentencepiece model. The data is prepared with
    the directory as --tokenizer, and the run accepts it; data of another tokenizer is refused."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from megarecipe.data.corpus import sotu_files
    from megarecipe.data.prepare import prepare
    from megarecipe.data.tokenizer import read_text

    hf_dir = make_hf_llama(tmp_path / "llama3ish", None)
    files = sotu_files()[::30][:5]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        (read_text(f) for f in files),
        trainers.BpeTrainer(
            vocab_size=1000,
            special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tok.save(os.path.join(hf_dir, "tokenizer.json"))
    with open(os.path.join(hf_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}, f)
    assert not os.path.exists(os.path.join(hf_dir, "tokenizer.model"))
    data = prepare(files, tmp_path / "data", tokenizer=hf_dir, val_tokens=2000, workers=1)
    assert data.tokenizer == "tokenizer.json" and data.eos_id == 1 and data.vocab_size == 1000
    layout = check_run(config(hf_dir, data.dir), world_size=1)
    assert layout.vocab_size == 2048 and layout.tokenizer_vocab == 1000
    with pytest.raises(ConfigError, match="prepared with another tokenizer"):
        check_run(config(hf_dir, tiny_data), world_size=1)


def test_settings_of_a_run_without_it_are_unchanged():
    from megarecipe.config import run_settings

    assert "init_from" not in run_settings(load_config("configs/tiny.yaml"))["model"]
