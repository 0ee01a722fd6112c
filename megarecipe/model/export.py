"""The export: what the recipe tools load, without DeepSpeed or megatron.

EXPORT/model.safetensors   fp32 weights under canonical (TP=1, PP=1) megatron names
EXPORT/config.yaml         the run's full config
EXPORT/model.json          format, vocab size, parameter counts, tokenizer hash
EXPORT/tokenizer.model     the sentencepiece model the run was trained with
"""
from __future__ import annotations

import json
import os
import shutil

import torch
from safetensors.torch import load_file, save_file

from megarecipe.config import Config, load_config, save_config
from megarecipe.model.llama import count_params
from megarecipe.model.reference import Llama

FORMAT = 1


def write_export(out_dir: str, state_dict: dict, cfg: Config, vocab_size: int, tokenizer_path: str | None = None) -> str:
    """Write into OUT.tmp, then move it into place: a crash never leaves a half export under the real name."""
    from megarecipe.data.tokenizer import file_sha256

    out_dir = os.path.normpath(out_dir)
    tmp = out_dir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    save_file({k: v.detach().float().contiguous().cpu() for k, v in state_dict.items()},
              os.path.join(tmp, "model.safetensors"))
    save_config(cfg, os.path.join(tmp, "config.yaml"))
    total, non_embedding = count_params(cfg.model, vocab_size)
    info = {"format": FORMAT, "vocab_size": vocab_size, "params": total, "params_non_embedding": non_embedding,
            "tokenizer_sha256": None}
    if tokenizer_path:
        shutil.copy(tokenizer_path, os.path.join(tmp, "tokenizer.model"))
        info["tokenizer_sha256"] = file_sha256(tokenizer_path)
    with open(os.path.join(tmp, "model.json"), "w") as f:
        json.dump(info, f, indent=1)
    old = out_dir + ".old"
    if os.path.isdir(out_dir):
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return out_dir


def load_export(export_dir: str, device="cpu") -> tuple[Llama, Config, dict]:
    """(plain-PyTorch model in eval mode, the run's config, model.json)."""
    for name in ("model.safetensors", "config.yaml", "model.json"):
        if not os.path.isfile(os.path.join(export_dir, name)):
            raise ValueError(f"{export_dir}: {name} is missing; export a finished run (RUN/export) or re-run "
                             f"training to its end")
    with open(os.path.join(export_dir, "model.json")) as f:
        info = json.load(f)
    if info.get("format") != FORMAT:
        raise ValueError(f"{export_dir}: export format {info.get('format')} is not {FORMAT}; re-export the run")
    cfg = load_config(os.path.join(export_dir, "config.yaml"))
    model = Llama(cfg.model, info["vocab_size"])
    state = load_file(os.path.join(export_dir, "model.safetensors"))
    expected = model.state_dict()
    for key, tensor in state.items():
        if key not in expected:
            raise ValueError(f"{export_dir}: unexpected weight {key}; the export does not match this model code")
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise ValueError(f"{export_dir}: {key} has shape {tuple(tensor.shape)}, the config implies "
                             f"{tuple(expected[key].shape)}; config.yaml and model.safetensors disagree")
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(f"{export_dir}: weights missing from model.safetensors, e.g. {missing[0]}")
    model.load_state_dict(state)
    return model.to(device).eval(), cfg, info
