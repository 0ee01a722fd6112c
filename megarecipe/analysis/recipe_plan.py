"""What passes between the recipe's pipeline (megarecipe/recipes/pipeline.py) and its report: the stage order
and the files the pipeline keeps in OUT. Here, below both, so the report reads them without importing recipes/."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

PLAN_JSON, STAGES_JSON = "plan.json", "stages.json"
FITS_JSON, REPORT_MD = "fits.json", "REPORT.md"  # written by the last stage (analysis/recipe_report.py)

# the stages in the order they run, which is also the order REPORT.md's time table lists them in
DATA, STANDARD, REGULARIZED, ENSEMBLES, DISTILL, DOWNSTREAM, REPORT = STAGES = (
    "data",
    "standard",
    "regularized",
    "ensembles",
    "distill",
    "downstream",
    "fits+report",
)


def _dicts(raw: dict, names) -> dict:
    """The fields of `raw` that are JSON objects; what is missing or of the wrong shape is left to its default
    (the stages rebuild the plan from the finished runs)."""
    return {n: raw[n] for n in names if isinstance(raw.get(n), dict)}


@dataclass
class RecipePlan:
    """OUT/plan.json: which run is what. The pipeline fills it stage by stage; the fits and the report read it.
    A run key is the size at the reference budget and SIZE_D<tokens> at another (Pipeline.key)."""

    by_budget: dict = field(default_factory=dict)  # str(budget) -> section -> size -> run dir
    standard: dict = field(default_factory=dict)  # the reference budget's runs, size -> run dir
    regularized: dict = field(default_factory=dict)
    ensembles: dict = field(default_factory=dict)  # size -> ensemble dir
    hyper: dict = field(default_factory=dict)  # section -> key -> {lr, weight_decay, epochs}, from --search
    searched: dict = field(default_factory=dict)  # section -> key -> the search's certified run dir
    untuned: dict = field(default_factory=dict)  # section -> key -> True: the reference budget's values used
    edges: dict = field(default_factory=dict)  # section -> key -> ["WD high", ...] on the grid's edge
    member_box: dict = field(default_factory=dict)  # key -> {"points": [...], "chosen": i}
    ensemble_hyper: dict = field(default_factory=dict)  # key -> the members' {lr, weight_decay, epochs}
    distill: dict = field(default_factory=dict)  # recipes/distill.py: size, single, sequence, logit_kd, ...
    downstream: dict = field(default_factory=dict)  # label -> the model dir evaluated
    downstream_skipped: dict = field(default_factory=dict)  # label -> task -> {"limit", "why"}

    @classmethod
    def from_dict(cls, raw) -> RecipePlan:
        return cls(**_dicts(raw if isinstance(raw, dict) else {}, [f.name for f in fields(cls)]))

    def to_dict(self) -> dict:
        """plan.json: the fields that hold something."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}

    def runs_by_budget(self, reference: int) -> dict:
        """budget -> section -> size -> run dir; a plan of one budget has only the reference's sections."""
        found = self.by_budget or {
            str(reference): {"standard": self.standard, "regularized": self.regularized, "ensembles": self.ensembles}
        }
        return {int(b): v for b, v in found.items()}


@dataclass
class RecipeFits:
    """OUT/fits.json, which every number of REPORT.md is read from. Per budget (`by_budget[str(D)]`): the
    standard and regularized run tables, the best standard run, the regularized fit over N, the ensembles (per
    size over K, and the joint limit) and the data efficiencies. Fits are PowerLaw.to_dict()'s, or {"error": ...}."""

    budget_tokens: int
    budgets: list
    bootstrap: int
    seed_sigma: float
    seed_sigma_dof: int
    runs: dict = field(default_factory=dict)  # section -> the reference budget's run table
    by_budget: dict = field(default_factory=dict)
    data_law: dict = field(default_factory=dict)  # the best standard loss over sizes, fitted over D
    data_scaling: dict = field(default_factory=dict)  # recipe -> its asymptote fitted over D
    orderings: list = field(default_factory=list)  # the paper's claims, each with its verdict
    distill: dict = field(default_factory=dict)
    member_box: dict = field(default_factory=dict)
    ensemble_hyper: dict = field(default_factory=dict)
    downstream: dict = field(default_factory=dict)  # label -> {"dir", "tasks"}

    @classmethod
    def from_dict(cls, raw: dict) -> RecipeFits:
        return cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def at(self, budget: int) -> dict:
        """One budget's fits; {} for a budget without runs."""
        return self.by_budget.get(str(budget), {})
