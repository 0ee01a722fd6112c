"""The run configuration: its schema (schema.py), the YAML + overrides loader (load.py), the settings that
define a run (settings.py), the DeepSpeed JSON (ds_config.py) and the checks that need nothing but the config
(layout.py). Checks that read the data dir or the teacher live with those layers; megarecipe/preflight.py runs
them all before anything is built."""

from megarecipe.config.ds_config import DS_CONFIG_DIR, read_ds_config, resolve_ds_config, zero_stage
from megarecipe.config.layout import KERNELS, DataFacts, Layout, pad_vocab, resolve_kernels, resolve_layout
from megarecipe.config.load import PRESET_DIR, literal, load_config, override, resolve_preset, save_config, to_yaml
from megarecipe.config.schema import (
    Config,
    ConfigError,
    DataConfig,
    DistillConfig,
    LoggingConfig,
    ModelConfig,
    OptimConfig,
    ParallelConfig,
    RunConfig,
    TrainConfig,
)
from megarecipe.config.settings import run_settings, settings_sha256
from megarecipe.config.sources import mix_sources

__all__ = [
    "DS_CONFIG_DIR",
    "KERNELS",
    "PRESET_DIR",
    "Config",
    "ConfigError",
    "DataConfig",
    "DataFacts",
    "DistillConfig",
    "Layout",
    "LoggingConfig",
    "ModelConfig",
    "OptimConfig",
    "ParallelConfig",
    "RunConfig",
    "TrainConfig",
    "literal",
    "load_config",
    "mix_sources",
    "override",
    "pad_vocab",
    "read_ds_config",
    "resolve_ds_config",
    "resolve_kernels",
    "resolve_layout",
    "resolve_preset",
    "run_settings",
    "save_config",
    "settings_sha256",
    "to_yaml",
    "zero_stage",
]
