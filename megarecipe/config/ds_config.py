"""The DeepSpeed JSON: a file in ds_configs/ (or a path) for ZeRO and communication settings. Its batch,
optimizer, schedule, precision and clipping fields come from the run's config and may not be in it."""

from __future__ import annotations

import json
from pathlib import Path

from megarecipe.config.schema import ConfigError

DS_CONFIG_DIR = Path(__file__).resolve().parents[1] / "ds_configs"


def resolve_ds_config(name: str) -> Path:
    path = Path(name)
    if not path.suffix:
        path = DS_CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        choices = ", ".join(sorted(p.stem for p in DS_CONFIG_DIR.glob("*.json")))
        raise ConfigError(f"parallel.ds_config={name!r} not found; use one of {choices} or a path to a JSON file")
    return path


def read_ds_config(name: str) -> dict:
    path = resolve_ds_config(name)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"parallel.ds_config: {path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    except (UnicodeDecodeError, OSError) as e:
        raise ConfigError(f"parallel.ds_config: {path} is not a readable JSON text file ({e})") from None


# Blocks of the JSON the trainer sets from the run's config, and the YAML fields that do: a value in the JSON
# would be overwritten or ignored, so it is refused.
SET_BY_CONFIG = {
    "train_batch_size": "train.global_batch_size",
    "train_micro_batch_size_per_gpu": "train.micro_batch_size",
    "gradient_accumulation_steps": "train.global_batch_size / train.micro_batch_size",
    "optimizer": "optim.lr, optim.beta1, optim.beta2, optim.eps and optim.weight_decay (AdamW)",
    "scheduler": "optim.schedule, optim.warmup_frac and optim.min_lr_ratio",
    "fp16": "train.precision (auto, fp32 or bf16)",
    "bf16": "train.precision (auto, fp32 or bf16)",
    "amp": "train.precision (auto, fp32 or bf16)",
    "gradient_clipping": "optim.grad_clip",
}


def check_not_set(ds: dict) -> None:
    """Refuse a JSON field the trainer does not take from the JSON, naming the YAML field that sets it."""
    for key, field in SET_BY_CONFIG.items():
        if key in ds:
            raise ConfigError(f"parallel.ds_config: remove {key!r} from the JSON; the trainer sets it from {field}")


def zero_stage(ds) -> int:
    zero = ds.get("zero_optimization", {}) if isinstance(ds, dict) else None
    stage = zero.get("stage", 0) if isinstance(zero, dict) else None
    if not isinstance(stage, int) or isinstance(stage, bool):
        raise ConfigError(
            "parallel.ds_config: the JSON needs an object 'zero_optimization' with an integer 'stage' (0-3)"
        )
    return stage
