"""The recipe's fits and comparisons (OUT/fits.json), from run dirs alone, as the paper makes them.

- The standard recipe overfits, so no asymptote is fitted to it: it is compared by its best run (the lowest loss
  over sizes) at each budget, with the seed-to-seed spread.
- The data law: at each budget the best standard loss over sizes (each size with its own tuned values), fitted
  over D. Data efficiency of a recipe at D = D_base(its asymptote) / D_base(the best standard loss at D).
- Regularized: L(N) per budget. Ensembles: L(K) per size (the K-limit), then those E_N over N (the joint limit).
- Each ordering of the paper is judged by a paired bootstrap over seed noise: every resample adds to every run's
  loss one draw of the seed noise measured here (the pooled standard deviation of the ensemble members' losses),
  shared by every quantity that run enters (an ensemble of k members gets the mean of its members' draws), and
  every fit and minimum is recomputed; P is the share of resamples in which the ordering holds. "held" needs
  P >= 0.95; a point estimate that holds with a lower P "held in the point estimate".
"""

from __future__ import annotations

import json
import os

import numpy as np

from megarecipe import ensembledir
from megarecipe.analysis.distill import final_loss
from megarecipe.analysis.downstream import read_results
from megarecipe.analysis.fit import FitError, Point, data_efficiency, fit_points, joint_asymptote
from megarecipe.analysis.recipe_plan import RecipeFits, RecipePlan
from megarecipe.rundir import RunDir

HELD_P = 0.95


def _json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def run_loss(run_dir: str) -> float:
    return float(_json(RunDir(run_dir).run_json)["final"]["val_loss"])


def facts(run_dir: str) -> dict:
    return _json(RunDir(run_dir).run_json).get("facts") or {}


def params_b(run_dir: str) -> float:
    return facts(run_dir)["params"] / 1e9


class Noise:
    """Seed-noise draws per run, shared by every quantity the run enters: (B,) each, or None without noise."""

    def __init__(self, sigma: float, n_boot: int, seed: int = 0):
        self.sigma, self.B = sigma, n_boot
        self.rng = np.random.default_rng(seed)
        self.draws: dict = {}

    @property
    def on(self) -> bool:
        return self.B > 0 and self.sigma > 0

    def run(self, run_dir: str):
        if not self.on:
            return None
        key = os.path.realpath(run_dir)
        if key not in self.draws:
            self.draws[key] = self.rng.normal(0.0, self.sigma, self.B)
        return self.draws[key]

    def ensemble(self, members: list[str], k: int):
        if not self.on:
            return None
        return np.mean([self.run(m) for m in members[:k]], axis=0)

    def of(self, loss: float, draw):
        return None if draw is None else loss + draw


def seed_sigma(ensembles: list[str]) -> tuple[float, int]:
    """Pooled standard deviation of final losses across seeds of the same settings (the ensemble members)."""
    sq, dof = 0.0, 0
    for d in ensembles:
        losses = np.array(_json(ensembledir.listing(d))["member_val_loss"], dtype=float)
        if len(losses) > 1:
            sq, dof = sq + float(((losses - losses.mean()) ** 2).sum()), dof + len(losses) - 1
    return (float(np.sqrt(sq / dof)) if dof else 0.0), dof


def fit(points: list[Point], n_boot: int, seed: int):
    """analysis/fit's fit_points, its bootstrap refitting each point's seed-noise draws (Point.boot; none when a
    point has none) at the fixed design: every point in every resample, since the sizes, member counts and
    budgets were chosen, not sampled (resampling 4 chosen points mostly leaves 3, which interpolate). (fit or
    None, error or None)."""
    try:
        n_boot = n_boot if all(p.boot is not None for p in points) else 0
        return fit_points(points, n_boot=n_boot, seed=seed, resample_points=False), None
    except FitError as e:
        return None, str(e)


def fit_dict(f, error) -> dict:
    return f.to_dict() if f is not None else {"error": error}


class Fits:
    """fits.json (`self.fits`, a RecipeFits), the fit objects for the plots (`self.objs`) and the bootstrap
    samples of every compared quantity (`self.samples`), built from the plan."""

    def __init__(self, out: str, recipe, plan: RecipePlan):
        self.out, self.r, self.plan = out, recipe, plan
        self.B = recipe.bootstrap
        self.by_budget = plan.runs_by_budget(recipe.budget)
        ens_dirs = [d for v in self.by_budget.values() for d in (v.get("ensembles") or {}).values()]
        sigma, dof = seed_sigma(ens_dirs)
        self.noise = Noise(sigma, self.B)
        self.fits = RecipeFits(
            budget_tokens=recipe.budget,
            budgets=sorted(self.by_budget),
            bootstrap=self.B,
            seed_sigma=sigma,
            seed_sigma_dof=dof,
        )
        self.objs, self.samples = {"by_budget": {}}, {}

    def rel(self, d: str) -> str:
        return os.path.relpath(d, self.out)

    # ---- per budget
    def _rows(self, section: str, runs: dict, budget: int) -> dict:
        edges = self.plan.edges.get(section) or {}
        untuned = self.plan.untuned.get(section) or {}
        key = (lambda s: s) if budget == self.r.budget else (lambda s: f"{s}_D{budget}")
        return {
            s: {
                "run": self.rel(d),
                "params": facts(d)["params"],
                "val_loss": run_loss(d),
                **{k: facts(d).get(k) for k in ("lr", "weight_decay", "epochs")},
                "edge": edges.get(key(s), []),
                "tuned": not untuned.get(key(s)),
            }
            for s, d in runs.items()
        }

    def _best_standard(self, runs: dict):
        losses = {s: run_loss(d) for s, d in runs.items()}
        best = min(losses, key=losses.get)
        boot = None
        if self.noise.on:
            boot = np.min(np.stack([losses[s] + self.noise.run(d) for s, d in runs.items()]), axis=0)
        return {
            "size": best,
            "run": self.rel(runs[best]),
            "val_loss": losses[best],
            "seed_sd": self.fits.seed_sigma if self.noise.on else None,
        }, boot

    def _over_n(self, runs: dict, seed: int):
        pts = [
            Point(params_b(d), run_loss(d), self.rel(d), self.noise.of(run_loss(d), self.noise.run(d)))
            for d in runs.values()
        ]
        return fit(pts, self.B, seed)

    def _ensembles(self, ens: dict, seed: int):
        """(table by size, per-size fits by size, Joint or None, error) of one budget's ensembles."""
        table, per = {}, {}
        for i, (size, d) in enumerate(ens.items()):
            e = _json(ensembledir.listing(d))
            table[size] = {
                "params": facts(e["members"][0])["params"],
                "val_loss_by_k": e["val_loss_by_k"],
                "dir": self.rel(d),
                "members": [self.rel(m) for m in e["members"]],
            }
            ks = range(1, len(e["val_loss_by_k"]) + 1)
            pts = [
                Point(k, v, f"{self.rel(d)} K={k}", self.noise.of(v, self.noise.ensemble(e["members"], k)))
                for k, v in zip(ks, e["val_loss_by_k"], strict=True)
            ]
            per[size], err = fit(pts, self.B, seed + i)
            if per[size] is None:
                table[size]["error"] = err
        good = {s: f for s, f in per.items() if f is not None}  # a size whose L(K) failed is left out of E
        joint, error = None, None
        try:
            joint = joint_asymptote(
                {table[s]["params"] / 1e9: f for s, f in good.items()},
                n_boot=self.B,
                seed=seed + 50,
                resample_points=False,
            )
        except FitError as e:
            error = str(e)
        return table, per, joint, error

    def budget(self, b: int, i: int) -> None:
        v = self.by_budget[b]
        out, objs = {}, {}
        std, reg, ens = v.get("standard") or {}, v.get("regularized") or {}, v.get("ensembles") or {}
        if std:
            out["standard_runs"] = self._rows("standard", std, b)
            out["best_standard"], self.samples[("best_standard", b)] = self._best_standard(std)
        if reg:
            out["regularized_runs"] = self._rows("regularized", reg, b)
            objs["regularized"], err = self._over_n(reg, seed=100 * i + 2)
            out["regularized"] = fit_dict(objs["regularized"], err)
            self._sample(("regularized", b), objs["regularized"])
        if ens:
            table, per, joint, err = self._ensembles(ens, seed=100 * i + 10)
            best = min((s for s in per if per[s] is not None), key=lambda s: per[s].E, default=None)
            out["ensembles"] = {
                "by_size": table,
                "per_size": {s: fit_dict(f, table[s].get("error")) for s, f in per.items()},
            }
            if best is not None:
                out["ensembles"]["best_size_asymptote"] = {"size": best, **per[best].to_dict()}
                objs["ensemble_best"] = per[best]
                self._sample(("ensemble", b), per[best])
            out["ensembles"]["joint"] = joint.over_n.to_dict() if joint else {"error": err}
            objs["joint"] = joint
            if joint:
                self._sample(("joint", b), joint.over_n)
        self.fits.by_budget[str(b)] = out
        self.objs["by_budget"][b] = objs

    def _sample(self, key, f) -> None:
        if f is not None and f.boot is not None:
            self.samples[key] = f.boot[:, 2]

    # ---- across budgets
    def data_law(self) -> None:
        budgets = [b for b in sorted(self.by_budget) if "best_standard" in self.fits.at(b)]
        pts = [
            Point(
                b / 1e9,
                self.fits.at(b)["best_standard"]["val_loss"],
                self.fits.at(b)["best_standard"]["run"],
                self.samples.get(("best_standard", b)),
            )
            for b in budgets
        ]
        law, err = fit(pts, self.B, seed=4)
        self.objs["data_law"] = law
        self.fits.data_law = {
            "sizes": {str(b): self.fits.at(b)["best_standard"]["size"] for b in budgets},
            **fit_dict(law, err),
        }
        if law is None:
            return
        for b in budgets:
            row = self.fits.at(b)
            ref_loss = row["best_standard"]["val_loss"]
            effs = {}
            for name, f in (
                ("regularized", self.objs["by_budget"][b].get("regularized")),
                ("ensemble", self.objs["by_budget"][b].get("ensemble_best")),
                ("joint", getattr(self.objs["by_budget"][b].get("joint"), "over_n", None)),
            ):
                if f is None:
                    continue
                eff = data_efficiency(
                    law,
                    f.E,
                    b / 1e9,
                    recipe_boot=self.samples.get((name, b)),
                    reference_loss=ref_loss,
                    reference_boot=self.samples.get(("best_standard", b)),
                )
                self.objs.setdefault("efficiency", {})[(name, b)] = eff
                effs[name] = {k: v for k, v in eff.to_dict().items() if k != "baseline"}
            row["efficiency"] = effs

    def data_scaling(self) -> None:
        """The recipes' asymptotes over D (the paper's Figs 7-8), where >= 3 budgets have them."""
        out = {}
        for name in ("regularized", "joint"):
            budgets = [b for b in sorted(self.by_budget) if (name, b) in self.samples or self._e(name, b) is not None]
            pts = [
                Point(b / 1e9, self._e(name, b), f"{name} E at D = {b}", self.samples.get((name, b)))
                for b in budgets
                if self._e(name, b) is not None
            ]
            if len(pts) < 3:
                continue
            f, err = fit(pts, self.B, seed=60 if name == "regularized" else 61)
            out[name] = fit_dict(f, err)
            self.objs.setdefault("data_scaling", {})[name] = f
        self.fits.data_scaling = out

    def _e(self, name: str, b: int):
        row = self.fits.at(b)
        f = row.get("regularized") if name == "regularized" else (row.get("ensembles") or {}).get("joint")
        return f.get("E") if isinstance(f, dict) else None

    # ---- orderings
    def ordering(self, claim: str, lo: tuple, hi: tuple, lo_value, hi_value) -> dict:
        """`lo` below `hi`: the point estimate, and the paired bootstrap's P."""
        if lo_value is None or hi_value is None:
            return {"claim": claim, "verdict": "not measured", "lhs": lo_value, "rhs": hi_value, "p": None}
        a, b = self.samples.get(lo), self.samples.get(hi)
        p = None
        if a is not None and b is not None:
            ok = np.isfinite(a) & np.isfinite(b)
            p = float(np.mean(a[ok] < b[ok])) if ok.any() else None
        point = lo_value < hi_value
        verdict = (
            "did not hold" if not point else "held" if p is not None and p >= HELD_P else "held in the point estimate"
        )
        return {
            "claim": claim,
            "lhs": lo_value,
            "rhs": hi_value,
            "p": p,
            "verdict": verdict,
            "resamples": None if a is None or b is None else int(np.sum(np.isfinite(a) & np.isfinite(b))),
        }

    def orderings(self) -> None:
        b = self.r.budget
        row = self.fits.at(b)
        ens = row.get("ensembles") or {}
        E = {
            k: (f.get("E") if isinstance(f, dict) else None)
            for k, f in (
                ("regularized", row.get("regularized")),
                ("ensemble", ens.get("best_size_asymptote")),
                ("joint", ens.get("joint")),
            )
        }
        best = (row.get("best_standard") or {}).get("val_loss")
        out = [
            self.ordering(
                "regularized asymptote < best standard run",
                ("regularized", b),
                ("best_standard", b),
                E["regularized"],
                best,
            ),
            self.ordering(
                "ensemble asymptote (best size, K -> inf) < regularized asymptote",
                ("ensemble", b),
                ("regularized", b),
                E["ensemble"],
                E["regularized"],
            ),
            self.ordering(
                "joint asymptote (K -> inf, then N -> inf) < ensemble asymptote (best size)",
                ("joint", b),
                ("ensemble", b),
                E["joint"],
                E["ensemble"],
            ),
        ]
        d = self.fits.distill
        paper = d.get("paper_experiment")
        if paper:
            out.append(
                self.ordering(
                    "distilled student < the same size alone",
                    ("student",),
                    ("single",),
                    paper["student_loss"],
                    d["single_loss"],
                )
            )
        for r in d.get("sequence", []):
            if r["self"]:
                out.append(
                    self.ordering(
                        f"self-distilled student (w {r['weight']:g}) < its own teacher",
                        ("seq", r["student"]),
                        ("single",),
                        r["student_loss"],
                        d["single_loss"],
                    )
                )
        self.fits.orderings = out

    # ---- distillation
    def distill(self) -> None:
        dist = self.plan.distill
        if not dist or "sequence" not in dist:
            return

        single = final_loss(dist["single"])
        self.samples[("single",)] = self.noise.of(single, self.noise.run(dist["single"]))
        rows = []
        for r in dist["sequence"]:
            s = final_loss(r["student"])
            t_loss = final_loss(r["teacher_dir"])
            gap = single - t_loss
            rows.append(
                {
                    "teacher": r["teacher"],
                    "teacher_size": r["teacher_size"],
                    "members": r["members"],
                    "self": r["self"],
                    "weight": r["weight"],
                    "student": self.rel(r["student"]),
                    "student_loss": s,
                    "teacher_loss": t_loss,
                    "retained": (single - s) / gap if gap > 0 and not r["self"] else None,
                    "beats_single": s < single,
                }
            )
            self.samples[("seq", self.rel(r["student"]))] = self.noise.of(s, self.noise.run(r["student"]))
        out = {
            "size": dist["size"],
            "single": self.rel(dist["single"]),
            "single_loss": single,
            "sequence": rows,
            "hyper": dist.get("hyper"),
            "synthetic_tokens": dist.get("synthetic_tokens"),
            "temperature": dist.get("temperature"),
        }
        ens = [r for r in rows if r["members"] > 1]
        if ens:  # the paper's 83%: the ensemble teacher at its largest synthetic share
            top = max(ens, key=lambda r: (r["members"], r["weight"]))
            out["paper_experiment"] = {
                k: top[k] for k in ("teacher", "weight", "student", "student_loss", "teacher_loss", "retained")
            }
            self.samples[("student",)] = self.samples[("seq", top["student"])]
        kd = dist.get("logit_kd")
        if kd:
            taught = (_json(RunDir(kd["student"]).run_json).get("distill") or {}).get("members")
            s, t_loss = final_loss(kd["student"]), final_loss(kd["teacher_dir"], taught)
            gap = single - t_loss
            out["logit_kd"] = {
                "teacher": kd["teacher"],
                "student": self.rel(kd["student"]),
                "student_loss": s,
                "teacher_loss": t_loss,
                "alpha": kd.get("alpha"),
                "retained": (single - s) / gap if gap > 0 else None,
                "beats_single": s < single,
            }
        self.fits.distill = out

    def compute(self) -> tuple[RecipeFits, dict]:
        for i, b in enumerate(sorted(self.by_budget)):
            self.budget(b, i)
        ref = self.fits.at(self.r.budget)
        for section in ("standard", "regularized"):
            self.fits.runs[section] = ref.get(f"{section}_runs", {})
        self.data_law()
        self.data_scaling()
        self.distill()
        self.orderings()
        self.fits.member_box = {
            k: {
                "chosen": v["chosen"],
                "points": [
                    {
                        **{n: p[n] for n in ("lr", "weight_decay", "epochs", "k_asymptote", "val_loss_by_k")},
                        "dir": self.rel(p["dir"]),
                    }
                    for p in v["points"]
                ],
            }
            for k, v in self.plan.member_box.items()
        }
        self.fits.ensemble_hyper = dict(self.plan.ensemble_hyper)
        if self.plan.downstream:
            self.fits.downstream = {
                label: {"dir": self.rel(p), "tasks": read_results(p)} for label, p in self.plan.downstream.items()
            }
        return self.fits, self.objs


def compute(out: str, recipe, plan: RecipePlan) -> tuple[RecipeFits, dict]:
    return Fits(out, recipe, plan).compute()
