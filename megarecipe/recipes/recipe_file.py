"""The recipe file: which data, sizes, budgets, hyperparameters, ensembles, student and evaluation the whole
pipeline (megarecipe/recipes/pipeline.py) runs. YAML over typed defaults; a bad field is one line naming it."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from megarecipe.analysis.tasks import TASKS
from megarecipe.config import PRESET_DIR

RECIPE_DIR = PRESET_DIR / "recipe"
BACKENDS = ("local", "slurm")


class RecipeError(ValueError):
    """A bad recipe file: one line naming the field and the fix."""


@dataclass
class DataSection:
    dir: str = "data/recipe"                    # prepared by the pipeline's first stage when it has no meta.json
    inputs: list = field(default_factory=list)  # text files or folders; empty = the embedded default corpus
    tokenizer: Optional[str] = None             # a .model, tokenizer.json or HF folder, instead of training
    vocab_size: int = 1024
    val_tokens: int = 65536                     # held out at preparation
    eval_tokens: int = 32768                    # of those, what every run is measured on (data.val_tokens)


@dataclass
class Size:
    name: str = ""
    config: Optional[str] = None                # a run config or preset; default: the recipe's base
    overrides: list = field(default_factory=list)


@dataclass
class Hyper:
    lr: float = 3e-3
    weight_decay: float = 0.1
    epochs: int = 1


@dataclass
class RecipeSection:
    """One recipe's hyperparameters per size: certified values (by an earlier search), or found by --search."""
    certified: dict = field(default_factory=dict)     # size name -> {lr, weight_decay, epochs}
    lr: list = field(default_factory=lambda: [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2])   # grids for --search
    weight_decay: list = field(default_factory=lambda: [0.0, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8])
    epochs: list = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64])


@dataclass
class EnsembleSection:
    sizes: list = field(default_factory=list)   # size names; the joint asymptote needs >= 3
    members: int = 3                            # K = 1..members, member 1 being the regularized run
    member_shift: bool = False                  # the paper's members: 2x epochs, 0.5x weight decay


@dataclass
class DistillSection:
    student: str = ""                           # a size name, smaller than the teacher's
    alpha: float = 0.9
    temperature: float = 1.0


@dataclass
class DownstreamSection:
    tasks: list = field(default_factory=lambda: ["arc_easy", "piqa", "sciq"])
    limit: Optional[int] = None                 # examples per task; null = all
    batch_size: int = 16


@dataclass
class LaunchSection:
    backend: str = "local"
    parallel: int = 1
    processes: int = 1
    slurm_args: list = field(default_factory=list)


@dataclass
class Recipe:
    name: str = "recipe"
    base: str = "tiny"                          # the run config every run starts from
    overrides: list = field(default_factory=list)   # key=value for every run
    budget: int = 32768                         # D: unique training tokens
    data_law_budgets: list = field(default_factory=list)   # other D for the standard recipe's data law
    data_law_size: str = ""                     # the size the data law is measured at; default: the largest
    sizes: list = field(default_factory=list)   # Size entries, smallest first
    data: DataSection = field(default_factory=DataSection)
    standard: RecipeSection = field(default_factory=RecipeSection)
    regularized: RecipeSection = field(default_factory=RecipeSection)
    ensemble: EnsembleSection = field(default_factory=EnsembleSection)
    distill: DistillSection = field(default_factory=DistillSection)
    downstream: DownstreamSection = field(default_factory=DownstreamSection)
    launch: LaunchSection = field(default_factory=LaunchSection)
    bootstrap: int = 200                        # resamples for the fits' intervals
    standard_weight_decay: float = 0.1


def resolve(path: str) -> str:
    """A recipe file, or a shipped recipe's name (`tiny`, `paper`)."""
    if os.path.isfile(path):
        return path
    name = Path(path).name
    shipped = RECIPE_DIR / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
    if shipped.is_file():
        return str(shipped)
    choices = ", ".join(sorted(p.stem for p in RECIPE_DIR.glob("*.yaml")))
    raise RecipeError(f"recipe file {path!r} not found; pass a YAML file or a shipped recipe ({choices})")


def load(path: str, overrides: list[str] | None = None) -> Recipe:
    path = resolve(path)
    try:
        raw = OmegaConf.load(path)
    except yaml.YAMLError as e:
        raise RecipeError(f"{path} is not valid YAML ({str(e).splitlines()[0]}); fix the file") from None
    try:
        layers = [OmegaConf.structured(Recipe), raw]
        for item in overrides or []:
            if "=" not in item:
                raise RecipeError(f"override {item!r} is not key=value; write e.g. launch.parallel=2")
            layers.append(OmegaConf.from_dotlist([item]))
        recipe = OmegaConf.to_object(OmegaConf.merge(*layers))
    except (ConfigKeyError, ValidationError) as e:
        key = getattr(e, "full_key", None) or "?"
        what = "unknown field" if isinstance(e, ConfigKeyError) else str(e).splitlines()[0]
        raise RecipeError(f"{key}: {what}; see {RECIPE_DIR / 'tiny.yaml'} for the fields") from None
    except OmegaConfBaseException as e:
        raise RecipeError(f"{path}: {str(e).splitlines()[0]}") from None
    except TypeError as e:
        raise RecipeError(f"{path}: {str(e).splitlines()[0]}; a field holds the wrong kind of value (a list "
                          f"where a mapping belongs, or the reverse)") from None
    recipe.sizes = [_size(i, s) for i, s in enumerate(recipe.sizes)]
    for section in ("standard", "regularized"):
        sec = getattr(recipe, section)
        sec.certified = {str(k): _hyper(f"{section}.certified.{k}", v) for k, v in sec.certified.items()}
    check(recipe)
    return recipe


def _size(i: int, raw) -> Size:
    if not isinstance(raw, dict):
        raise RecipeError(f"sizes[{i}]: must be a mapping with name, config and/or overrides")
    unknown = set(raw) - {"name", "config", "overrides"}
    if unknown:
        raise RecipeError(f"sizes[{i}].{sorted(unknown)[0]}: unknown field; a size has name, config, overrides")
    if not raw.get("name"):
        raise RecipeError(f"sizes[{i}].name: missing; give each size a short name")
    return Size(str(raw["name"]), raw.get("config"), [str(o) for o in raw.get("overrides") or []])


def _hyper(where: str, raw) -> Hyper:
    if not isinstance(raw, dict) or set(raw) - {"lr", "weight_decay", "epochs"}:
        raise RecipeError(f"{where}: must be a mapping of lr, weight_decay, epochs")
    try:
        return Hyper(float(raw.get("lr", 3e-3)), float(raw.get("weight_decay", 0.1)), int(raw.get("epochs", 1)))
    except (TypeError, ValueError):
        raise RecipeError(f"{where}: lr, weight_decay and epochs must be numbers") from None


RULES = {"lr": ("a finite number > 0", lambda v: 0 < v < math.inf),
         "weight_decay": ("a finite number >= 0", lambda v: 0 <= v < math.inf),
         "epochs": ("an integer >= 1", lambda v: v >= 1 and float(v).is_integer())}


def _check_hyper(where: str, name: str, value) -> None:
    what, ok = RULES[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
        _fail(where, f"{value!r} is not {what}")


def _fail(field_name: str, what: str) -> None:
    raise RecipeError(f"{field_name}: {what}")


def check(r: Recipe) -> None:
    names = [s.name for s in r.sizes]
    if len(names) < 2:
        _fail("sizes", "needs >= 2 model sizes (the paper's fits need >= 3); add entries")
    if len(set(names)) != len(names):
        _fail("sizes", f"two sizes share a name ({names}); give each its own")
    if r.budget <= 0:
        _fail("budget", "must be > 0 tokens")
    if any(int(b) <= 0 or int(b) == r.budget for b in r.data_law_budgets):
        _fail("data_law_budgets", f"each must be > 0 and differ from budget {r.budget} (that run is there already)")
    if len({int(b) for b in r.data_law_budgets}) != len(r.data_law_budgets):
        _fail("data_law_budgets", "a budget is listed twice; list each once")
    if r.data_law_size and r.data_law_size not in names:
        _fail("data_law_size", f"{r.data_law_size!r} is not a size ({', '.join(names)})")
    for section in ("standard", "regularized"):   # all of them now: a bad one would stop a later stage, days in
        sec = getattr(r, section)
        for k, hp in sec.certified.items():
            if k not in names:
                _fail(f"{section}.certified.{k}", f"not a size ({', '.join(names)})")
            for name in RULES:
                _check_hyper(f"{section}.certified.{k}.{name}", name, getattr(hp, name))
        for name in RULES:
            for i, value in enumerate(getattr(sec, name)):
                _check_hyper(f"{section}.{name}[{i}]", name, value)
    for i, task in enumerate(r.downstream.tasks):
        if task not in TASKS:
            _fail(f"downstream.tasks[{i}]", f"{task!r} is not a task with offline data; use some of "
                                            f"{', '.join(TASKS)}")
    for i, s in enumerate(r.ensemble.sizes):
        if s not in names:
            _fail(f"ensemble.sizes[{i}]", f"{s!r} is not a size ({', '.join(names)})")
    if len(set(r.ensemble.sizes)) != len(r.ensemble.sizes):
        _fail("ensemble.sizes", "a size is listed twice; list each once")
    if r.ensemble.sizes and r.ensemble.members < 2:
        _fail("ensemble.members", "must be >= 2")
    if r.distill.student:
        if r.distill.student not in names:
            _fail("distill.student", f"{r.distill.student!r} is not a size ({', '.join(names)})")
        if not r.ensemble.sizes:
            _fail("distill.student", "distillation needs an ensemble teacher; fill ensemble.sizes")
    if not 0 <= r.distill.alpha <= 1 or not 0 < r.distill.temperature < math.inf:
        _fail("distill", "alpha must be in [0, 1] and temperature in (0, inf)")
    if r.launch.backend not in BACKENDS:
        _fail("launch.backend", f"{r.launch.backend!r} is unknown; use one of {', '.join(BACKENDS)}")
    if r.launch.parallel < 1 or r.launch.processes < 1:
        _fail("launch", "parallel and processes must be >= 1")
    if r.data.eval_tokens > r.data.val_tokens:
        _fail("data.eval_tokens", f"must be <= data.val_tokens ({r.data.val_tokens})")
    if r.bootstrap < 0:
        _fail("bootstrap", "must be >= 0")
    if r.downstream.limit is not None and r.downstream.limit < 1:   # lm-eval reads 0 as a fraction: no examples
        _fail("downstream.limit", "must be >= 1 (examples per task), or null for every example")
    if r.downstream.batch_size < 1:
        _fail("downstream.batch_size", "must be >= 1")


def hyper(r: Recipe, section: str, size: str) -> Hyper | None:
    return getattr(r, section).certified.get(size)
