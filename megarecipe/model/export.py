"""The export: what the recipe tools load, without DeepSpeed or megatron.

EXPORT/model.safetensors   fp32 weights under canonical (TP=1, PP=1) megatron names
EXPORT/config.yaml         the run's full config
EXPORT/model.json          format, vocab size, parameter counts, tokenizer hash
EXPORT/tokenizer.model     the sentencepiece model the run was trained with (when known), or
EXPORT/tokenizer.json      its Hugging Face tokenizer, with tokenizer_config.json naming its EOS
"""

from __future__ import annotations

import json
import os
import re
import shutil

import torch
from safetensors.torch import load_file, save_file

from megarecipe import atomic, rundir
from megarecipe.config import Config, ConfigError, ModelConfig, load_config, save_config
from megarecipe.data.tokenizer import HF_CONFIG, HF_FILE, SP_FILE, file_sha256
from megarecipe.errors import UserError
from megarecipe.model.reference import Llama
from megarecipe.model.size import count_params

FORMAT = 1


def expected_shapes(m: ModelConfig, vocab_size: int) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in Llama(m, vocab_size).state_dict().items()}


def check_weights(shapes: dict[str, tuple[int, ...]], m: ModelConfig, vocab_size: int, where: str) -> None:
    """Raise ValueError naming the first weight whose name or shape the config does not imply."""
    expected = expected_shapes(m, vocab_size)
    for key, shape in shapes.items():
        if key not in expected:
            raise UserError(
                f"{where}: unexpected weight {key}; weights must use canonical megatron names "
                f"(TP=1, PP=1, e.g. decoder.layers.0.mlp.linear_fc1.weight)"
            )
        if tuple(shape) != expected[key]:
            raise UserError(
                f"{where}: {key} has shape {tuple(shape)} but the config (vocab {vocab_size}) implies "
                f"{expected[key]}; the model config and the weights come from different runs"
            )
    missing = sorted(set(expected) - set(shapes))
    if missing:
        raise UserError(
            f"{where}: {len(missing)} weight(s) missing, e.g. {missing[0]}; pass the full, merged "
            f"state dict of every pipeline stage"
        )


def write_export(
    out_dir: str, state_dict: dict, cfg: Config, vocab_size: int, tokenizer_path: str | None = None
) -> str:
    """Write into OUT.tmp, then move it into place: a crash never leaves a half export under the real name."""
    # megatron's state_dict() carries an empty `_extra_state` entry per linear layer (room for fp8 metadata)
    state_dict = {k: v for k, v in state_dict.items() if not (k.endswith("._extra_state") and v is None)}
    check_weights({k: v.shape for k, v in state_dict.items()}, cfg.model, vocab_size, "write_export")
    out_dir = os.path.realpath(out_dir)
    tmp = atomic.build_dir(out_dir)
    try:
        weights = os.path.join(tmp, rundir.WEIGHTS)
        save_safetensors({k: v.detach().float().contiguous().cpu() for k, v in state_dict.items()}, weights)
        os.chmod(weights, atomic.file_mode())  # safetensors writes through a private temporary file (mode 0600)
        save_config(cfg, os.path.join(tmp, rundir.CONFIG))
        total, non_embedding = count_params(cfg.model, vocab_size)
        info = {
            "format": FORMAT,
            "vocab_size": vocab_size,
            "params": total,
            "params_non_embedding": non_embedding,
            "tokenizer_sha256": None,
        }
        if tokenizer_path:
            hf = str(tokenizer_path).endswith(".json")
            shutil.copyfile(tokenizer_path, os.path.join(tmp, HF_FILE if hf else SP_FILE))
            config = os.path.join(os.path.dirname(tokenizer_path), HF_CONFIG)
            if hf and os.path.isfile(config):
                shutil.copyfile(config, os.path.join(tmp, HF_CONFIG))
            info["tokenizer_sha256"] = file_sha256(tokenizer_path)
        with open(os.path.join(tmp, rundir.MODEL_JSON), "w") as f:
            json.dump(info, f, indent=1)
    except BaseException:  # a full disk: the half-written build would keep it full
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic.replace_dir(tmp, out_dir)
    return out_dir


def save_safetensors(tensors: dict, path: str, metadata: dict | None = None) -> None:
    """safetensors' save_file, whose I/O errors (its own exception type) become the OSError they are."""
    try:
        save_file(tensors, path, metadata=metadata)
    except Exception as e:
        code = re.search(r"os error (\d+)", str(e))
        if not code:
            raise
        raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), path) from None


def _damaged(path: str, why: str) -> UserError:
    return UserError(f"{path} is damaged ({why}); restore the export from a copy, or leave the run out")


def read_info(export_dir: str) -> dict:
    """model.json, checked: a JSON object of this format with an integer vocab size."""
    path = os.path.join(export_dir, rundir.MODEL_JSON)
    try:
        with open(path) as f:
            info = json.load(f)
    except FileNotFoundError:
        raise UserError(
            f"{export_dir}: model.json is missing; the export is incomplete, re-export the run "
            f"(a finished training run writes RUN/export)"
        ) from None
    except (OSError, ValueError) as e:
        raise _damaged(path, str(e)) from None
    if not isinstance(info, dict):
        raise _damaged(path, "not a JSON object")
    if "format" not in info:
        raise _damaged(path, "no format")
    if info["format"] != FORMAT:
        raise UserError(
            f"{export_dir}: model.json has format {info.get('format')}, this code reads format {FORMAT}; "
            f"re-export the run with this version"
        )
    if not isinstance(info.get("vocab_size"), int) or info["vocab_size"] < 1:
        raise _damaged(path, f"vocab_size is {info.get('vocab_size')!r}")
    return info


def read_config(export_dir: str) -> Config:
    """config.yaml, checked: the run's whole config (an empty file would silently be the defaults)."""
    path = os.path.join(export_dir, rundir.CONFIG)
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise _damaged(path, "empty")
    try:
        return load_config(path)
    except ConfigError as e:
        raise _damaged(path, str(e)) from None


def load_weights(export_dir: str) -> dict:
    path = os.path.join(export_dir, rundir.WEIGHTS)
    try:
        return load_file(path)
    except FileNotFoundError:
        raise
    except Exception as e:  # safetensors' own error type: a truncated or overwritten file
        raise _damaged(path, str(e).splitlines()[0] if str(e) else type(e).__name__) from None


def load_export(export_dir: str, device="cpu") -> tuple[Llama, Config, dict]:
    """(plain-PyTorch model in eval mode, the run's config, model.json)."""
    if not os.path.isdir(export_dir):
        raise UserError(f"{export_dir}: no such export directory; give RUN/export of a finished run")
    for name in (rundir.WEIGHTS, rundir.CONFIG, rundir.MODEL_JSON):
        if not os.path.isfile(os.path.join(export_dir, name)):
            raise UserError(
                f"{export_dir}: {name} is missing; the export is incomplete, re-export the run "
                f"(a finished training run writes RUN/export)"
            )
    info = read_info(export_dir)
    cfg = read_config(export_dir)
    state = load_weights(export_dir)
    check_weights({k: v.shape for k, v in state.items()}, cfg.model, info["vocab_size"], export_dir)
    model = Llama(cfg.model, info["vocab_size"])
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), cfg, info
