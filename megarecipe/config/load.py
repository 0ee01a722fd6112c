"""YAML files plus `key=value` overrides into typed dataclasses: the one loader for run configs and recipe files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from megarecipe import atomic
from megarecipe.config.numbers import counts_to_ints, is_int_field, parse_count, written_count
from megarecipe.config.schema import Config, ConfigError
from megarecipe.config.sources import mix_sources

# Shipped inside the package (the repository's configs/ and ds_configs/ link here), so they resolve wherever
# megarecipe is installed.
PRESET_DIR = Path(__file__).resolve().parents[1] / "configs"


def layered(schema: type, path: Optional[str], overrides: Optional[list[str]], example: str):
    """The one layering of run configs and recipe files: `schema`'s defaults, then the YAML file at `path`
    (optional), then each `key=value` in order, merged into a typed `schema` object. Integer fields may be
    written as counts (200M, 1.5B, 1e9). A file that is no YAML and an override that is no key=value are a
    ConfigError here; OmegaConf's own errors (unknown key, wrong type) go to the caller, which names the fix."""
    layers = [OmegaConf.structured(schema)]
    if path:
        try:
            layers.append(_with_counts(OmegaConf.load(path), schema))
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML ({str(e).splitlines()[0]}); fix the file") from None
        except (UnicodeDecodeError, OSError) as e:
            raise ConfigError(f"{path} is not a readable YAML text file ({e}); pass a YAML file") from None
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value; write e.g. {example}")
        key, _, value = item.partition("=")
        if is_int_field(schema, key) and written_count(value):  # the text as typed: 1e400 is not inf
            item = f"{key}={parse_count(value, key)}"
        layers.append(OmegaConf.from_dotlist([item]))
    return OmegaConf.to_object(OmegaConf.merge(*layers))


def load_config(path: Optional[str] = None, overrides: Optional[list[str]] = None) -> Config:
    """YAML file (optional) merged over the defaults, then dotlist overrides; returns a typed Config."""
    try:
        cfg = layered(Config, resolve_preset(path) if path else None, overrides, "optim.lr=1e-3")
        if cfg.data.mix:
            cfg.data.dir = mix_sources(cfg.data)[0][0]
        return cfg
    except (ConfigKeyError, ValidationError) as e:
        raise ConfigError(_omegaconf_message(e)) from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"config: {str(e).splitlines()[0]}") from None
    except (TypeError, yaml.YAMLError) as e:
        raise ConfigError(
            f"{path or 'config'}: {str(e).splitlines()[0]}; the file must be a mapping of sections "
            f"(run, data, model, optim, parallel, train, distill, logging)"
        ) from None


def _with_counts(layer, schema: type):
    """Integer fields may be written as counts: data.train_tokens=200M, 1.5B, 1e9."""
    if not isinstance(layer, DictConfig):
        return layer  # not a mapping: the merge names the problem
    return OmegaConf.create(counts_to_ints(OmegaConf.to_container(layer, resolve=False), schema))


def resolve_preset(path: str) -> str:
    """A YAML path, or a preset's name (`tiny`, `300m`) or its path in a checkout (`configs/tiny.yaml`)."""
    if os.path.isfile(path):
        return path
    name = Path(path).name
    preset = PRESET_DIR / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
    if preset.is_file() and (Path(path).parent in (Path("."), Path("configs")) or not Path(path).suffix):
        return str(preset)
    choices = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
    raise ConfigError(f"config file {path!r} not found; pass a YAML file or a preset name ({choices})")


def _omegaconf_message(e: OmegaConfBaseException) -> str:
    key = getattr(e, "full_key", None) or "?"
    if isinstance(e, ConfigKeyError):
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        node = OmegaConf.structured(Config)
        known = OmegaConf.select(node, parent) if parent else node
        names = ", ".join(known.keys()) if hasattr(known, "keys") else ""
        return f"unknown key {key!r}; check the spelling (known keys{' in ' + parent if parent else ''}: {names})"
    msg = str(e).splitlines()[0]
    if msg.startswith("Incompatible value 'None'") or "is not Optional" in msg:
        return f"{key} is empty; give it a value (e.g. {key}=...)"
    return f"{key}: {msg}; give a value of the field's type"


def literal(value) -> str:
    """`value` as an override's right-hand side that OmegaConf reads back as the same string: a `${` in a path
    is escaped, not taken for an interpolation."""
    return str(value).replace("${", "\\${")


def override(key: str, value) -> str:
    """The `key=value` override that sets `key` to exactly `value` (a path the tool chose, not a user's text)."""
    return f"{key}={literal(value)}"


def _literal_strings(value):
    if isinstance(value, str):
        return literal(value)
    if isinstance(value, dict):
        return {k: _literal_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_literal_strings(v) for v in value]
    return value


def to_yaml(cfg: Config) -> str:
    """The config as YAML that load_config reads back unchanged (a literal `${` in a value stays literal)."""
    return OmegaConf.to_yaml(OmegaConf.create(_literal_strings(OmegaConf.to_container(OmegaConf.structured(cfg)))))


def save_config(cfg: Config, path: str) -> None:
    atomic.write_text(path, to_yaml(cfg))
