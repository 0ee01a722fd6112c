"""Run configuration: nested dataclasses, loaded from YAML plus `key=value` overrides, validated before
anything is built. Batch sizes are stated once here; DeepSpeed's batch fields are derived from them."""
from __future__ import annotations

import json
import math
import os
import re
from fractions import Fraction
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from megarecipe.system import has_cuda

# Shipped inside the package (the repository's configs/ and ds_configs/ link here), so they resolve wherever
# megarecipe is installed.
PRESET_DIR = Path(__file__).resolve().parent / "configs"
DS_CONFIG_DIR = Path(__file__).resolve().parent / "ds_configs"


class ConfigError(ValueError):
    """A bad setting: the message names the field and the fix, on one line."""


@dataclass
class RunConfig:
    dir: str = "runs/default"
    seed: int = 1234              # model init and data order; the data subset never depends on it
    resume: bool = False          # continue from dir/checkpoints if a checkpoint is there
    resume_from: Optional[str] = None   # a checkpoint tag (stepNNNNNNNN) to resume from instead of `latest`


@dataclass
class DataConfig:
    dir: str = "data/default"
    train_tokens: Optional[int] = None   # unique-token budget D; None = every prepared training token
    val_tokens: Optional[int] = None     # fixed prefix of the held-out split; None = all of it
    tokenizer: Optional[str] = None      # if set, the data dir must have been made with this tokenizer
    # DIR:RATIO entries, e.g. [data/dclm:0.1,data/synth:0.9]: train on several data dirs at these ratios. The first
    # is the real data: data.dir becomes it, its tokens are the budget D and val/loss; the others fill up each epoch.
    mix: Optional[list[str]] = None


@dataclass
class ModelConfig:
    num_layers: int = 2
    hidden_size: int = 128
    ffn_hidden_size: int = 352
    num_attention_heads: int = 4
    num_query_groups: int = 2            # key/value heads (grouped-query attention)
    seq_len: int = 128
    vocab_size: Optional[int] = None     # None = the tokenizer's, padded to a multiple of 128 * TP
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    init_std: float = 0.02
    recompute: str = "none"              # activation recomputation: none, selective (attention) or full (per layer)
    kernels: str = "auto"                # layer implementation: auto, local, sdpa or te (model/llama.py)


@dataclass
class OptimConfig:
    lr: float = 3e-3
    weight_decay: float = 0.1            # torch AdamW semantics: per-step decay is lr * weight_decay
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    warmup_frac: float = 0.01
    grad_clip: float = 1.0


@dataclass
class ParallelConfig:
    tp: int = 1
    pp: int = 1
    ds_config: str = "zero1"             # a name in ds_configs/ or a path to a DeepSpeed JSON


@dataclass
class TrainConfig:
    epochs: int = 1
    global_batch_size: int = 16          # sequences per optimizer step, all ranks together
    micro_batch_size: int = 8            # sequences per forward on one data-parallel rank
    eval_every: int = 100                # steps; the last step is always evaluated
    eval_batch_size: int = 8
    checkpoint_every: int = 0            # steps; 0 = only at the end
    keep_checkpoints: int = 2
    stop_after: Optional[int] = None     # stop (with a checkpoint) after this many steps; the schedule is unchanged
    on_nonfinite: str = "stop"           # "stop" names the step and exits; "skip" drops the batch
    precision: str = "auto"              # auto = bf16 on GPU, fp32 on CPU
    log_every: int = 1
    progress: bool = True


@dataclass
class DistillConfig:
    teacher: Optional[str] = None        # a finished run (RUN/export) or an ensemble dir (ensemble.json); null = none
    alpha: float = 0.9                   # weight of the teacher's term; 1 - alpha weighs the real next token
    temperature: float = 1.0


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)


def load_config(path: Optional[str] = None, overrides: Optional[list[str]] = None) -> Config:
    """YAML file (optional) merged over the defaults, then dotlist overrides; returns a typed Config."""
    base = OmegaConf.structured(Config)
    try:
        layers = [base]
        if path:
            path = resolve_preset(path)
            try:
                layers.append(OmegaConf.load(path))
            except yaml.YAMLError as e:
                raise ConfigError(f"{path} is not valid YAML ({str(e).splitlines()[0]}); fix the file") from None
            except (UnicodeDecodeError, OSError) as e:
                raise ConfigError(f"{path} is not a readable YAML text file ({e}); pass a config file") from None
        for item in overrides or []:
            if "=" not in item:
                raise ConfigError(f"override {item!r} is not key=value; write e.g. optim.lr=1e-3")
            layers.append(OmegaConf.from_dotlist([item]))
        cfg = OmegaConf.to_object(OmegaConf.merge(*layers))
        if cfg.data.mix:
            cfg.data.dir = mix_sources(cfg.data)[0][0]
        return cfg
    except (ConfigKeyError, ValidationError) as e:
        raise ConfigError(_omegaconf_message(e)) from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"config: {str(e).splitlines()[0]}") from None
    except (TypeError, yaml.YAMLError) as e:
        raise ConfigError(f"{path or 'config'}: {str(e).splitlines()[0]}; the file must be a mapping of sections "
                          f"(run, data, model, optim, parallel, train, distill)") from None


def mix_sources(d: DataConfig) -> list[tuple[str, Fraction]]:
    """data.mix as (dir, ratio) pairs; [(data.dir, 1)] without a mix."""
    if not d.mix:
        return [(d.dir, Fraction(1))]
    out = []
    for item in d.mix:
        where, _, ratio = str(item).rpartition(":")
        try:
            weight = Fraction(ratio.strip())
        except (ValueError, ZeroDivisionError):
            weight = None
        if not where or weight is None or weight <= 0:
            raise ConfigError(f"data.mix entry {item!r} is not DIR:RATIO with a ratio > 0; write e.g. "
                              f"data.mix=[data/real:0.1,data/synth:0.9]")
        out.append((where, weight))
    if len({w for w, _ in out}) != len(out):
        raise ConfigError(f"data.mix names a data dir twice ({d.mix}); give each dir once")
    return out


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
    from megarecipe import atomic

    atomic.write_text(path, to_yaml(cfg))


# Settings that change how a run is operated, not what it computes.
_OPERATIONAL = {"run": ("dir", "resume", "resume_from"), "model": ("recompute", "kernels"),
                "train": ("stop_after", "progress", "log_every", "checkpoint_every", "keep_checkpoints")}


def run_settings(cfg: Config) -> dict:
    """The settings that define a run's result, as plain values: runs with equal settings are the same run."""
    plain = OmegaConf.to_container(OmegaConf.structured(cfg))
    for section, names in _OPERATIONAL.items():
        for name in names:
            plain[section].pop(name)
    if not plain["distill"]["teacher"]:   # alpha and temperature mean nothing without a teacher
        plain.pop("distill")
    if not plain["data"]["mix"]:   # a single-dir run's settings are what they were before data.mix existed
        plain["data"].pop("mix")
    return plain


def settings_sha256(cfg: Config) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(run_settings(cfg), sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------------------------------
# The DeepSpeed JSON: a file in ds_configs/ whose batch, clipping and precision fields the engine fills.

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


# ----------------------------------------------------------------------------------------------------
# Validation. Everything here runs before any process group or model is built.

@dataclass
class Layout:
    """What the config and the world size imply: the numbers every later stage uses."""
    world_size: int
    tp: int
    pp: int
    dp: int
    zero_stage: int
    micro_batch_size: int
    global_batch_size: int
    seq_len: int
    vocab_size: int              # the model's, padded
    tokenizer_vocab: int
    num_sequences: int           # training sequences in the budget
    train_tokens: int            # D actually used: num_sequences * seq_len
    total_steps: int
    warmup_steps: int
    epoch_sequences: int = 0     # sequences per epoch: num_sequences, plus the other dirs' share with data.mix


KERNELS = ("auto", "local", "sdpa", "te")


def resolve_kernels(kernels: str, cuda: bool, here: bool = True) -> str:
    """model.kernels as the model is built on a machine with or without CUDA: auto is sdpa on CUDA, local
    elsewhere. te is never chosen for the user: its parameter names differ, so a run started with it must resume
    with it. here=False: that machine is not this one (whether it has Transformer Engine is its own check)."""
    _check(kernels in KERNELS, f"model.kernels={kernels!r}; use one of {', '.join(KERNELS)}")
    if kernels == "auto":
        return "sdpa" if cuda else "local"
    if kernels == "te":
        import importlib.util

        _check(cuda, "model.kernels=te needs a CUDA device; use auto, local or sdpa on this machine")
        _check(not here or importlib.util.find_spec("transformer_engine") is not None,
               "model.kernels=te needs Transformer Engine (pip install transformer_engine[pytorch]); "
               "or use model.kernels=sdpa")
    return kernels


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def resolve_layout(cfg: Config, world_size: Optional[int] = None, check_data: bool = True,
                   cuda: Optional[bool] = None) -> Layout:
    """Check every setting that can be checked without building anything, and derive the layout from them.
    cuda: whether the machines that train have CUDA; None: they are this one. A planner or a Slurm submission
    judges for the GPU nodes it targets, not for the login node it runs on."""
    here = cuda is None
    cuda = has_cuda() if here else cuda
    ws = world_size if world_size is not None else int(os.environ.get("WORLD_SIZE", "1"))
    m, o, p, t, d = cfg.model, cfg.optim, cfg.parallel, cfg.train, cfg.data

    for name in ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups", "seq_len"):
        _check(getattr(m, name) >= 1, f"model.{name}={getattr(m, name)} must be >= 1")
    _check(m.hidden_size % m.num_attention_heads == 0,
           f"model.hidden_size={m.hidden_size} is not divisible by model.num_attention_heads={m.num_attention_heads}; "
           f"choose a hidden size that is a multiple of the head count")
    _check(m.num_attention_heads % m.num_query_groups == 0,
           f"model.num_attention_heads={m.num_attention_heads} is not divisible by model.num_query_groups="
           f"{m.num_query_groups}; use a kv-head count that divides the head count")
    _check(m.recompute in ("none", "selective", "full"), f"model.recompute={m.recompute!r}; use none/selective/full")
    resolve_kernels(m.kernels, cuda, here)
    _check(p.tp >= 1 and p.pp >= 1, f"parallel.tp={p.tp} and parallel.pp={p.pp} must be >= 1")
    _check(m.num_attention_heads % p.tp == 0,
           f"model.num_attention_heads={m.num_attention_heads} is not divisible by parallel.tp={p.tp}; "
           f"use a TP size that divides the head count")
    _check(m.num_query_groups % p.tp == 0,
           f"model.num_query_groups={m.num_query_groups} is not divisible by parallel.tp={p.tp}; "
           f"use a TP size that divides the kv-head count")
    _check(m.num_layers % p.pp == 0,
           f"model.num_layers={m.num_layers} is not divisible by parallel.pp={p.pp}; "
           f"use a PP size that divides the layer count")
    _check(ws % (p.tp * p.pp) == 0,
           f"world size {ws} is not divisible by parallel.tp * parallel.pp = {p.tp * p.pp}; "
           f"launch a multiple of {p.tp * p.pp} processes or change tp/pp")
    dp = ws // (p.tp * p.pp)

    ds = read_ds_config(p.ds_config)
    stage = zero_stage(ds)
    _check(stage in (0, 1, 2, 3),
           f"parallel.ds_config: zero_optimization.stage={stage} is not in 0-3; use 0, 1, 2 or 3")
    _check(not (p.pp > 1 and stage > 1),
           f"parallel.pp={p.pp} with ZeRO stage {stage} is not supported (ZeRO-2/3 shard gradients that pipeline "
           f"stages accumulate); use parallel.ds_config=zero1 or zero0 with pipeline parallelism")
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"):
        _check(key not in ds, f"parallel.ds_config: remove {key!r} from the JSON; batch sizes come from train.* only")

    _check(o.lr > 0 and math.isfinite(o.lr), f"optim.lr={o.lr} must be > 0")
    _check(0 <= o.weight_decay < math.inf, f"optim.weight_decay={o.weight_decay} must be >= 0 and finite")
    _check(o.eps >= 0, f"optim.eps={o.eps} must be >= 0")
    _check(0 <= o.warmup_frac < 1, f"optim.warmup_frac={o.warmup_frac} must be in [0, 1)")
    _check(0 <= o.beta1 < 1 and 0 <= o.beta2 < 1, "optim.beta1 and optim.beta2 must be in [0, 1)")
    _check(o.grad_clip >= 0, f"optim.grad_clip={o.grad_clip} must be >= 0 (0 turns clipping off)")

    _check(t.epochs >= 1, f"train.epochs={t.epochs} must be >= 1")
    _check(t.log_every >= 1, f"train.log_every={t.log_every} must be >= 1")
    _check(cfg.run.seed >= 0, f"run.seed={cfg.run.seed} must be >= 0")
    _check(cfg.run.resume_from is None or (cfg.run.resume and bool(re.fullmatch(r"step\d{8}", cfg.run.resume_from))),
           f"run.resume_from={cfg.run.resume_from!r} needs run.resume=true and a tag such as step00000120")
    _check(t.micro_batch_size >= 1, f"train.micro_batch_size={t.micro_batch_size} must be >= 1")
    per_step = t.micro_batch_size * dp
    _check(t.global_batch_size >= per_step and t.global_batch_size % per_step == 0,
           f"train.global_batch_size={t.global_batch_size} is not a multiple of train.micro_batch_size * "
           f"data-parallel size = {t.micro_batch_size} * {dp}; set it to a multiple of {per_step}")
    _check(t.eval_every >= 1, f"train.eval_every={t.eval_every} must be >= 1")
    _check(t.eval_batch_size >= 1, f"train.eval_batch_size={t.eval_batch_size} must be >= 1")
    _check(t.checkpoint_every >= 0, f"train.checkpoint_every={t.checkpoint_every} must be >= 0")
    _check(t.keep_checkpoints >= 1, f"train.keep_checkpoints={t.keep_checkpoints} must be >= 1")
    _check(t.on_nonfinite in ("stop", "skip"), f"train.on_nonfinite={t.on_nonfinite!r}; use 'stop' or 'skip'")
    _check(t.precision in ("auto", "fp32", "bf16"), f"train.precision={t.precision!r}; use auto, fp32 or bf16")
    if t.precision == "bf16" or (t.precision == "auto" and cuda):
        _check(stage != 0, "parallel.ds_config: ZeRO stage 0 with bf16 is not supported (DeepSpeed's stage-0 bf16 "
                           "optimizer needs engine.backward, which megatron's schedule does not call); use zero1, "
                           "or train.precision=fp32")
    _check(t.stop_after is None or t.stop_after >= 1, f"train.stop_after={t.stop_after} must be >= 1 or null")
    _check(d.train_tokens is None or d.train_tokens > 0, f"data.train_tokens={d.train_tokens} must be > 0 or null")
    _check(d.val_tokens is None or d.val_tokens > m.seq_len,
           f"data.val_tokens={d.val_tokens} must exceed model.seq_len={m.seq_len} or be null")

    mix_sources(d)
    k = cfg.distill
    _check(0 <= k.alpha <= 1, f"distill.alpha={k.alpha} must be in [0, 1]")
    _check(k.temperature > 0 and math.isfinite(k.temperature), f"distill.temperature={k.temperature} must be > 0")

    tok_vocab, train_available = 0, None
    if check_data:
        from megarecipe.data.errors import DataError
        from megarecipe.data.meta import load_meta
        try:
            meta = load_meta(d.dir)
        except DataError as e:
            raise ConfigError(f"data.dir: {e}") from None
        tok_vocab, train_available = meta.vocab_size, meta.train_tokens
        val_available = min(meta.val_tokens, d.val_tokens or meta.val_tokens)
        _check(val_available > m.seq_len,
               f"data.dir={d.dir!r} has {val_available} validation tokens (data.val_tokens={d.val_tokens}), less than "
               f"one sequence of model.seq_len={m.seq_len}; prepare with a larger --val-tokens")
        if d.tokenizer:
            from megarecipe.data.tokenizer import file_sha256
            _check(os.path.isfile(d.tokenizer), f"data.tokenizer={d.tokenizer!r} not found; give a .model file or null")
            _check(file_sha256(d.tokenizer) == meta.tokenizer_sha256,
                   f"data.dir={d.dir!r} was made with another tokenizer than data.tokenizer={d.tokenizer!r}; "
                   f"re-run tools/prepare_data.py --tokenizer {d.tokenizer} or point data.dir at a matching dir")
        if d.train_tokens is not None:
            _check(d.train_tokens <= train_available,
                   f"data.train_tokens={d.train_tokens} is larger than the {train_available} training tokens prepared "
                   f"in {d.dir}; lower it or prepare more text")
    vocab = m.vocab_size if m.vocab_size is not None else _pad_vocab(tok_vocab or 1, p.tp)
    _check(vocab >= tok_vocab, f"model.vocab_size={vocab} is smaller than the tokenizer's {tok_vocab}; "
                               f"set model.vocab_size >= {tok_vocab} or leave it null")
    _check(vocab % p.tp == 0, f"model.vocab_size={vocab} is not divisible by parallel.tp={p.tp}; leave it null to pad")

    budget = d.train_tokens if d.train_tokens is not None else train_available
    num_sequences = (budget - 1) // m.seq_len if budget else 0
    if check_data:
        _check(num_sequences >= 1, f"data.train_tokens={budget} is less than one sequence of model.seq_len={m.seq_len}")
    if check_data and k.teacher:
        from megarecipe import teacher, teacher_cache
        try:
            if teacher_cache.is_cache(k.teacher):
                teacher_cache.check(k.teacher, meta.tokenizer_sha256, m.seq_len, num_sequences, k.temperature)
            else:
                teacher.check(k.teacher, meta.tokenizer_sha256, tok_vocab, m.seq_len)
        except teacher.TeacherError as e:
            raise ConfigError(str(e)) from None
    epoch_sequences = num_sequences
    if d.mix and k.teacher:
        from megarecipe import teacher_cache
        _check(not teacher_cache.is_cache(k.teacher),
               "distill.teacher is a top-k cache, which covers one data dir only; with data.mix use a live teacher")
    if d.mix and check_data:
        epoch_sequences = _check_mix(d, meta, m.seq_len, num_sequences)
    total = t.epochs * epoch_sequences // t.global_batch_size
    if check_data:
        _check(total >= 1, f"{t.epochs} epoch(s) of {epoch_sequences} sequences is less than one step of "
                           f"train.global_batch_size={t.global_batch_size}; raise train.epochs or lower the batch")
    return Layout(
        world_size=ws, tp=p.tp, pp=p.pp, dp=dp, zero_stage=stage, micro_batch_size=t.micro_batch_size,
        global_batch_size=t.global_batch_size, seq_len=m.seq_len,
        vocab_size=vocab, tokenizer_vocab=tok_vocab, num_sequences=num_sequences,
        train_tokens=num_sequences * m.seq_len, total_steps=total,
        warmup_steps=max(1, math.ceil(o.warmup_frac * total)) if o.warmup_frac > 0 else 0,
        epoch_sequences=epoch_sequences)


def _check_mix(d: DataConfig, meta, seq_len: int, num_sequences: int) -> int:
    """Every mixed dir loads, shares the first one's tokenizer and holds a sequence; returns the epoch's size."""
    from megarecipe.data.errors import DataError
    from megarecipe.data.meta import load_meta
    from megarecipe.data.mix import mix_counts

    sources = mix_sources(d)
    for where, _ in sources[1:]:
        try:
            other = load_meta(where)
        except DataError as e:
            raise ConfigError(f"data.mix: {e}") from None
        _check(other.tokenizer_sha256 == meta.tokenizer_sha256,
               f"data.mix: {where!r} was made with another tokenizer than {d.dir!r}; mix only data dirs of one "
               f"tokenizer (tools/prepare_data.py --tokenizer, or sample from a teacher trained on {d.dir!r})")
        _check(other.train_tokens > seq_len,
               f"data.mix: {where!r} has {other.train_tokens} training tokens, less than one sequence of "
               f"model.seq_len={seq_len}+1; sample or prepare more")
    counts = mix_counts(num_sequences, [w for _, w in sources])
    _check(min(counts) >= 1, f"data.mix={d.mix}: a ratio gives no sequence per epoch of {num_sequences}; raise it")
    return sum(counts)


def _pad_vocab(n: int, tp: int) -> int:
    multiple = 128 * tp
    return -(-n // multiple) * multiple
