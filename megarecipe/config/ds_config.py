"""The DeepSpeed JSON: a file in ds_configs/ (or a path) whose batch, clipping and precision fields the engine
fills from the run's config."""
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


def zero_stage(ds) -> int:
    zero = ds.get("zero_optimization", {}) if isinstance(ds, dict) else None
    stage = zero.get("stage", 0) if isinstance(zero, dict) else None
    if not isinstance(stage, int) or isinstance(stage, bool):
        raise ConfigError("parallel.ds_config: the JSON needs an object 'zero_optimization' with an integer "
                          "'stage' (0-3)")
    return stage

