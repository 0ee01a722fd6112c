"""model.init_from: a local Hugging Face Llama directory whose config.json sets the model's shape.

The weights are loaded at step 0 (megarecipe/parallel/hf_init.py); the data must be tokenized with the
directory's tokenizer.json or sentencepiece tokenizer.model (`prepare_data.py --tokenizer DIR` takes the
tokenizer.json first, as megarecipe/preflight.py checks): continued pre-training.
"""

from __future__ import annotations

import json
import os

from megarecipe.errors import ConfigError

# a Hugging Face directory's files (transformers' names)
HF_CONFIG, HF_WEIGHTS, HF_INDEX = "config.json", "model.safetensors", "model.safetensors.index.json"

# config.json key -> model.* field it sets
SHAPE = {
    "num_hidden_layers": "num_layers",
    "hidden_size": "hidden_size",
    "intermediate_size": "ffn_hidden_size",
    "num_attention_heads": "num_attention_heads",
    "num_key_value_heads": "num_query_groups",
    "rms_norm_eps": "norm_eps",
    "vocab_size": "vocab_size",
}


def read_hf_config(path: str) -> dict:
    where = f"model.init_from={path!r}"
    config_path = os.path.join(path, HF_CONFIG)
    if not os.path.isfile(config_path):
        raise ConfigError(
            f"{where}: no config.json there; give a local Hugging Face Llama directory (save_pretrained's output)"
        )
    try:
        with open(config_path) as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{where}: config.json is unreadable ({e}); give a Hugging Face model directory") from None
    if not isinstance(config, dict) or config.get("model_type") != "llama":
        raise ConfigError(
            f"{where}: config.json is not a Llama's (model_type {config.get('model_type')!r}); "
            f"only LlamaForCausalLM checkpoints can initialise this model"
        )
    return config


def rope_theta(config: dict) -> float:
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    return float(rope.get("rope_theta", config.get("rope_theta", 10000.0)))


def check_supported(config: dict, path: str) -> None:
    """Refuse what this model cannot compute exactly as transformers does."""
    where = f"model.init_from={path!r}"
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    problems = [
        (config.get("hidden_act", "silu") != "silu", f"hidden_act {config.get('hidden_act')!r} (SwiGLU needs silu)"),
        (bool(config.get("attention_bias")) or bool(config.get("mlp_bias")), "biases in attention or MLP"),
        (
            rope.get("rope_type", rope.get("type", "default")) != "default",
            f"RoPE scaling {rope.get('rope_type', rope.get('type'))!r}",
        ),
        (
            "head_dim" in config and config["head_dim"] != config["hidden_size"] // config["num_attention_heads"],
            f"head_dim {config.get('head_dim')} other than hidden_size / num_attention_heads",
        ),
    ]
    for bad, what in problems:
        if bad:
            raise ConfigError(
                f"{where}: the model has {what}, which this Llama does not implement; initialise "
                f"from a plain Llama checkpoint"
            )


def apply_hf_shape(cfg) -> None:
    """Set model.* from the directory's config.json; the other settings (seq_len, kernels, ...) stay the user's."""
    path = cfg.model.init_from
    config = read_hf_config(path)
    check_supported(config, path)
    for key, field in SHAPE.items():
        if key in config:
            setattr(cfg.model, field, config[key])
    cfg.model.rope_theta = rope_theta(config)
