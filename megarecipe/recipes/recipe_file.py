"""The recipe file: which data, sizes, budgets, hyperparameters, ensembles, student and evaluation the whole
pipeline (megarecipe/recipes/pipeline.py) runs. YAML over typed defaults; a bad field is one line naming it."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from megarecipe import errors
from megarecipe.analysis.tasks import TASKS
from megarecipe.config import PRESET_DIR, ConfigError
from megarecipe.config.load import layered

RECIPE_DIR = PRESET_DIR / "recipe"
BACKENDS = ("local", "slurm")


class RecipeError(errors.UserError):
    """A bad recipe file: one line naming the field and the fix."""


@dataclass
class DataSection:
    dir: str = "data/recipe"  # prepared by the pipeline's first stage when it has no meta.json
    inputs: list = field(default_factory=list)  # text files or folders; empty = the embedded default corpus
    tokenizer: Optional[str] = None  # a .model, tokenizer.json or HF folder, instead of training
    vocab_size: int = 1024
    val_tokens: int = 65536  # held out at preparation
    eval_tokens: int = 32768  # of those, what every run is measured on (data.val_tokens)


@dataclass
class Size:
    name: str = ""
    config: Optional[str] = None  # a run config or preset; default: the recipe's base
    overrides: list = field(default_factory=list)


@dataclass
class Hyper:
    lr: float = 3e-3
    weight_decay: float = 0.1
    epochs: int = 1


@dataclass
class RecipeSection:
    """One recipe's hyperparameters per (size, budget): certified values (by an earlier search), or found by
    --search. The standard recipe runs at every budget; the others at `budgets` (null: every one)."""

    certified: dict = field(default_factory=dict)  # size name -> {lr, weight_decay, epochs}, at `budget`
    certified_at: dict = field(default_factory=dict)  # another budget -> {size name -> {lr, weight_decay, epochs}}
    budgets: Optional[list] = None  # which of the recipe's `budgets` besides `budget`; null: all
    untuned_from_reference: bool = False  # a budget without values takes the reference's, flagged "not tuned"
    lr: list = field(default_factory=lambda: [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2])  # grids for --search
    weight_decay: list = field(default_factory=lambda: [0.0, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8])
    epochs: list = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64])


@dataclass
class EnsembleSection:
    sizes: list = field(default_factory=list)  # size names; the joint asymptote needs >= 3
    members: int = 3  # K = 1..members
    member_shift: bool = True  # the paper's members: 2x epochs (<= 128), 0.5x weight decay (>= 0.1)
    member_box: bool = False  # the paper's 5-point box around the shift, best K-asymptote kept
    budgets: Optional[list] = None  # which of the recipe's `budgets` besides `budget`; null: all


@dataclass
class Teacher:
    name: str = ""
    size: str = ""  # the teacher's size: the student's own for self-distillation
    members: int = 1  # 1: that size's regularized run; more: an ensemble of that size
    weights: list = field(default_factory=lambda: [0.75, 0.9])  # the synthetic share of each student's data


@dataclass
class DistillSection:
    """Sequence-level distillation, the paper's: each teacher samples `synthetic_tokens` at `temperature` (from
    EOS), and the student trains on real data mixed with them (data.mix), `epochs` passes over the real data."""

    student: str = ""  # a size name
    teachers: list = field(default_factory=list)  # Teacher entries
    synthetic_tokens: int = 0  # 0: 4 x budget
    temperature: float = 1.0
    lr: float = 3e-3  # the paper's student: LR 3e-3, WD 0.1, 16 epochs
    weight_decay: float = 0.1
    epochs: int = 16
    logit_kd: bool = True  # the extension: token-level KD from the first ensemble teacher
    alpha: float = 0.9  # logit KD's weight on the teacher term


@dataclass
class DownstreamSection:
    tasks: list = field(default_factory=lambda: ["arc_easy", "piqa", "sciq"])
    limit: Optional[int] = None  # examples per task; null = all
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
    base: str = "tiny"  # the run config every run starts from
    overrides: list = field(default_factory=list)  # key=value for every run
    budget: int = 32768  # D: unique training tokens, the reference budget
    budgets: list = field(default_factory=list)  # other D: the standard recipe at every size (its data law over
    #                                              all budgets), and the other recipes at their sections' budgets
    sizes: list = field(default_factory=list)  # Size entries, smallest first
    data: DataSection = field(default_factory=DataSection)
    standard: RecipeSection = field(default_factory=RecipeSection)
    regularized: RecipeSection = field(default_factory=RecipeSection)
    ensemble: EnsembleSection = field(default_factory=EnsembleSection)
    distill: DistillSection = field(default_factory=DistillSection)
    downstream: DownstreamSection = field(default_factory=DownstreamSection)
    launch: LaunchSection = field(default_factory=LaunchSection)
    bootstrap: int = 200  # resamples for the fits' intervals
    standard_weight_decay: float = 0.1
    seed: int = 0  # added to every run's run.seed (and the teachers' sampling seed): the same recipe, other seeds


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
        recipe = layered(Recipe, path, overrides, "launch.parallel=2")
    except ConfigError as e:
        raise RecipeError(str(e)) from None
    except (ConfigKeyError, ValidationError) as e:
        key = getattr(e, "full_key", None) or "?"
        what = "unknown field" if isinstance(e, ConfigKeyError) else str(e).splitlines()[0]
        raise RecipeError(f"{key}: {what}; see {RECIPE_DIR / 'tiny.yaml'} for the fields") from None
    except OmegaConfBaseException as e:
        raise RecipeError(f"{path}: {str(e).splitlines()[0]}") from None
    except TypeError as e:
        raise RecipeError(
            f"{path}: {str(e).splitlines()[0]}; a field holds the wrong kind of value (a list "
            f"where a mapping belongs, or the reverse)"
        ) from None
    recipe.sizes = [_size(i, s) for i, s in enumerate(recipe.sizes)]
    for section in ("standard", "regularized"):
        sec = getattr(recipe, section)
        sec.certified = {str(k): _hyper(f"{section}.certified.{k}", v) for k, v in sec.certified.items()}
        at = {}
        for b, by_size in sec.certified_at.items():
            if not isinstance(by_size, dict) or not str(b).isdigit():
                raise RecipeError(
                    f"{section}.certified_at.{b}: must be a budget (tokens) mapping sizes to "
                    f"{{lr, weight_decay, epochs}}"
                )
            at[int(b)] = {str(k): _hyper(f"{section}.certified_at.{b}.{k}", v) for k, v in by_size.items()}
        sec.certified_at = at
    recipe.distill.teachers = [_teacher(i, t) for i, t in enumerate(recipe.distill.teachers)]
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


def _teacher(i: int, raw) -> Teacher:
    if not isinstance(raw, dict) or set(raw) - {"name", "size", "members", "weights"}:
        raise RecipeError(f"distill.teachers[{i}]: must be a mapping of name, size, members, weights")
    try:
        t = Teacher(
            str(raw.get("name") or raw.get("size") or ""),
            str(raw.get("size") or ""),
            int(raw.get("members", 1)),
            [float(w) for w in raw.get("weights", [0.75, 0.9])],
        )
    except (TypeError, ValueError):
        raise RecipeError(f"distill.teachers[{i}]: members must be an integer and weights a list of numbers") from None
    return t


def _hyper(where: str, raw) -> Hyper:
    if not isinstance(raw, dict) or set(raw) - {"lr", "weight_decay", "epochs"}:
        raise RecipeError(f"{where}: must be a mapping of lr, weight_decay, epochs")
    try:
        return Hyper(float(raw.get("lr", 3e-3)), float(raw.get("weight_decay", 0.1)), int(raw.get("epochs", 1)))
    except (TypeError, ValueError):
        raise RecipeError(f"{where}: lr, weight_decay and epochs must be numbers") from None


RULES = {
    "lr": ("a finite number > 0", lambda v: 0 < v < math.inf),
    "weight_decay": ("a finite number >= 0", lambda v: 0 <= v < math.inf),
    "epochs": ("an integer >= 1", lambda v: v >= 1 and float(v).is_integer()),
}


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
    if any(int(b) <= 0 or int(b) == r.budget for b in r.budgets):
        _fail("budgets", f"each must be > 0 and differ from budget {r.budget} (that one is run already)")
    if len({int(b) for b in r.budgets}) != len(r.budgets):
        _fail("budgets", "a budget is listed twice; list each once")
    for section in ("standard", "regularized"):  # all of them now: a bad one would stop a later stage, days in
        sec = getattr(r, section)
        for k, hp in sec.certified.items():
            if k not in names:
                _fail(f"{section}.certified.{k}", f"not a size ({', '.join(names)})")
            for name in RULES:
                _check_hyper(f"{section}.certified.{k}.{name}", name, getattr(hp, name))
        for b, by_size in sec.certified_at.items():
            if b not in r.budgets:
                _fail(f"{section}.certified_at.{b}", f"not one of budgets {list(r.budgets)}")
            for k, hp in by_size.items():
                if k not in names:
                    _fail(f"{section}.certified_at.{b}.{k}", f"not a size ({', '.join(names)})")
                for name in RULES:
                    _check_hyper(f"{section}.certified_at.{b}.{k}.{name}", name, getattr(hp, name))
        for name in RULES:
            for i, value in enumerate(getattr(sec, name)):
                _check_hyper(f"{section}.{name}[{i}]", name, value)
    for section in ("regularized", "ensemble"):
        for b in getattr(r, section).budgets or []:
            if int(b) not in r.budgets:
                _fail(f"{section}.budgets", f"{b} is not one of budgets {list(r.budgets)}; add it there first")
    for i, task in enumerate(r.downstream.tasks):
        if task not in TASKS:
            _fail(f"downstream.tasks[{i}]", f"{task!r} is not a task with offline data; use some of {', '.join(TASKS)}")
    for i, s in enumerate(r.ensemble.sizes):
        if s not in names:
            _fail(f"ensemble.sizes[{i}]", f"{s!r} is not a size ({', '.join(names)})")
    if len(set(r.ensemble.sizes)) != len(r.ensemble.sizes):
        _fail("ensemble.sizes", "a size is listed twice; list each once")
    if r.ensemble.sizes and r.ensemble.members < 2:
        _fail("ensemble.members", "must be >= 2")
    missing = set(section_budgets(r, "ensemble")) - set(section_budgets(r, "regularized"))
    if r.ensemble.sizes and missing:  # members are shifted from the regularized values at their budget
        _fail("ensemble.budgets", f"{sorted(missing)} not in regularized.budgets; add them there too")
    dc = r.distill
    if dc.student:
        if dc.student not in names:
            _fail("distill.student", f"{dc.student!r} is not a size ({', '.join(names)})")
        if not dc.teachers:
            _fail("distill.teachers", "list the teachers (name, size, members, weights) that sample synthetic data")
    for i, t in enumerate(dc.teachers):
        where = f"distill.teachers[{i}]"
        if t.size not in names:
            _fail(f"{where}.size", f"{t.size!r} is not a size ({', '.join(names)})")
        if t.members < 1 or (t.members > 1 and t.size not in r.ensemble.sizes):
            _fail(
                f"{where}.members",
                "must be 1 (the size's regularized run), or more with the size in ensemble.sizes (its members)",
            )
        if not t.weights or not all(0 < w < 1 for w in t.weights):
            _fail(f"{where}.weights", "each synthetic share must be in (0, 1), e.g. [0.75, 0.9]")
    if len({t.name for t in dc.teachers}) != len(dc.teachers):
        _fail("distill.teachers", "two teachers share a name; give each its own")
    if (
        not 0 <= dc.alpha <= 1
        or not 0 < dc.temperature < math.inf
        or dc.synthetic_tokens < 0
        or dc.epochs < 1
        or dc.lr <= 0
    ):
        _fail("distill", "alpha must be in [0, 1], temperature in (0, inf), lr > 0, synthetic_tokens >= 0, epochs >= 1")
    if r.launch.backend not in BACKENDS:
        _fail("launch.backend", f"{r.launch.backend!r} is unknown; use one of {', '.join(BACKENDS)}")
    if r.launch.parallel < 1 or r.launch.processes < 1:
        _fail("launch", "parallel and processes must be >= 1")
    if r.data.eval_tokens > r.data.val_tokens:
        _fail("data.eval_tokens", f"must be <= data.val_tokens ({r.data.val_tokens})")
    if r.bootstrap < 0:
        _fail("bootstrap", "must be >= 0")
    if r.seed < 0:
        _fail("seed", "must be >= 0 (it is added to every run's run.seed)")
    if r.downstream.limit is not None and r.downstream.limit < 1:  # lm-eval reads 0 as a fraction: no examples
        _fail("downstream.limit", "must be >= 1 (examples per task), or null for every example")
    if r.downstream.batch_size < 1:
        _fail("downstream.batch_size", "must be >= 1")


def section_budgets(r: Recipe, section: str) -> list[int]:
    """The budgets a recipe section runs at, the reference budget first."""
    others = r.budgets if section == "standard" or getattr(r, section).budgets is None else getattr(r, section).budgets
    return [r.budget, *sorted(int(b) for b in others)]


def hyper(r: Recipe, section: str, size: str, budget: int | None = None) -> Hyper | None:
    sec = getattr(r, section)
    if budget is None or budget == r.budget:
        return sec.certified.get(size)
    return sec.certified_at.get(int(budget), {}).get(size)
