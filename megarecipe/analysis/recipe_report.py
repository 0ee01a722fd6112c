"""The recipe's fits (OUT/fits.json) and its report (OUT/REPORT.md, PNG plots beside it), from run dirs alone.

Every number in REPORT.md is read from fits.json (the dict this module writes), so the two cannot disagree.
N is in billions of parameters and D in billions of tokens, as in fit_scaling.

Intervals: a fit of 3 points to 3 parameters interpolates, so resampling points says nothing. Each bootstrap
resample instead also adds to every point a draw of the seed-to-seed noise measured here: the pooled standard
deviation of the ensemble members' losses (members differ only by seed). The joint fit's second stage fits each
resample's first-stage asymptotes, so its interval carries both stages.
"""
from __future__ import annotations

import json
import math
import os
import time

import numpy as np

from megarecipe import atomic
from megarecipe.analysis.fit import FitError, Joint, Point, data_efficiency, fit_power_law

FITS_JSON, REPORT_MD = "fits.json", "REPORT.md"


def _json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _loss(run_dir: str) -> float:
    return float(_json(os.path.join(run_dir, "run.json"))["final"]["val_loss"])


def _facts(run_dir: str) -> dict:
    return _json(os.path.join(run_dir, "run.json")).get("facts") or {}


def _params_b(run_dir: str) -> float:
    return _facts(run_dir)["params"] / 1e9


def _fit(points, n_boot, seed, sigma=0.0, y_boot=None):
    """Best point per x, fitted; n_boot resamples with Gaussian seed noise `sigma` added to each point."""
    best = {}
    for p in points:
        if p.x not in best or p.loss < best[p.x].loss:
            best[p.x] = p
    chosen = [best[x] for x in sorted(best)]
    y = np.array([p.loss for p in chosen])
    if y_boot is None and n_boot and sigma > 0:
        y_boot = y + np.random.default_rng(seed + 1000).normal(0.0, sigma, size=(n_boot, len(y)))
    try:
        fit = fit_power_law([p.x for p in chosen], y, n_boot=n_boot, seed=seed, y_boot=y_boot)
    except FitError as e:
        return None, str(e)
    fit.sources = [p.source for p in chosen]
    fit.dropped = [p for p in points if p not in chosen]
    return fit, None


def seed_sigma(plan: dict) -> tuple[float, int]:
    """Pooled standard deviation of final losses across seeds of the same settings (the ensemble members)."""
    sq, dof = 0.0, 0
    for d in (plan.get("ensembles") or {}).values():
        losses = np.array(_json(os.path.join(d, "ensemble.json"))["member_val_loss"], dtype=float)
        if len(losses) > 1:
            sq, dof = sq + float(((losses - losses.mean()) ** 2).sum()), dof + len(losses) - 1
    return (float(np.sqrt(sq / dof)) if dof else 0.0), dof


def _joint(curves: dict, n_boot: int, sigma: float) -> Joint:
    if len(curves) < 3:
        raise FitError(f"the joint asymptote needs ensembles at >= 3 model sizes, got {len(curves)}")
    per_n = {}
    for i, n in enumerate(sorted(curves)):
        fit, err = _fit(curves[n], n_boot, seed=20 + i, sigma=sigma)
        if fit is None:
            raise FitError(f"N = {n:g}: {err}")
        per_n[n] = fit
    sizes = list(per_n)
    y_boot = np.stack([per_n[n].boot[:, 2] for n in sizes], axis=1) if n_boot else None
    over, err = _fit([Point(n, per_n[n].E, f"E_N of N = {n:g}") for n in sizes], n_boot, seed=30, y_boot=y_boot)
    if over is None:
        raise FitError(err)
    return Joint(per_n, over)


def _fit_dict(fit, error):
    return fit.to_dict() if fit is not None else {"error": error}


def compute(out: str, recipe, plan: dict) -> tuple[dict, dict]:
    """(fits.json's dict, the fit objects for the plots)."""
    B = recipe.bootstrap
    sigma, dof = seed_sigma(plan)
    fits, objs = {"budget_tokens": recipe.budget, "bootstrap": B, "seed_sigma": sigma, "seed_sigma_dof": dof,
                  "runs": {}}, {}
    for section in ("standard", "regularized"):
        runs = plan.get(section, {})
        fits["runs"][section] = {s: {"run": os.path.relpath(d, out), "params": _facts(d)["params"],
                                     "val_loss": _loss(d), **{k: _facts(d).get(k) for k in ("lr", "weight_decay",
                                                                                            "epochs")}}
                                 for s, d in runs.items()}
        pts = [Point(_params_b(d), _loss(d), os.path.relpath(d, out)) for d in runs.values()]
        objs[section], err = _fit(pts, B, seed=1 if section == "standard" else 2, sigma=sigma)
        fits[section] = _fit_dict(objs[section], err)
    ens = plan.get("ensembles") or {}
    if ens:
        curves, table = {}, {}
        for size, d in ens.items():
            e = _json(os.path.join(d, "ensemble.json"))
            n = _params_b(e["members"][0])
            curves[n] = [Point(k, v, f"{os.path.relpath(d, out)} K={k}") for k, v in enumerate(e["val_loss_by_k"], 1)]
            table[size] = {"params": _facts(e["members"][0])["params"], "val_loss_by_k": e["val_loss_by_k"],
                           "dir": os.path.relpath(d, out)}
        fits["ensembles"] = {"by_size": table}
        try:
            joint = _joint(curves, B, sigma)
            objs["joint"] = joint
            fits["ensembles"]["per_size"] = {s: joint.per_n[_params_b(_json(os.path.join(d, "ensemble.json"))
                                                                       ["members"][0])].to_dict()
                                             for s, d in ens.items()}
            fits["ensembles"]["joint"] = joint.over_n.to_dict()
            best_n = min(joint.per_n, key=lambda n: joint.per_n[n].E)
            objs["ensemble_best"] = joint.per_n[best_n]
            fits["ensembles"]["best_size_asymptote"] = {"params_billions": best_n, **joint.per_n[best_n].to_dict()}
        except FitError as e:
            fits["ensembles"]["error"] = str(e)
            per = {}
            for i, (n, pts) in enumerate(sorted(curves.items())):
                f, err = _fit(pts, B, seed=10 + i, sigma=sigma)
                per[n] = f
                fits["ensembles"].setdefault("per_size", {})[f"{n:g}"] = _fit_dict(f, err)
            good = {n: f for n, f in per.items() if f is not None}
            if good:
                best_n = min(good, key=lambda n: good[n].E)
                objs["ensemble_best"] = good[best_n]
                fits["ensembles"]["best_size_asymptote"] = {"params_billions": best_n, **good[best_n].to_dict()}
    law = plan.get("data_law") or {}
    if law.get("runs"):
        pts = [Point(int(b) / 1e9, _loss(d), os.path.relpath(d, out)) for b, d in law["runs"].items()]
        base, err = _fit(pts, B, seed=4, sigma=sigma)
        objs["data_law"] = base
        fits["data_law"] = {"size": law["size"], **_fit_dict(base, err)}
        fits["efficiency"] = {}
        if base is not None:
            ref = recipe.budget / 1e9
            for name, fit in (("regularized", objs.get("regularized")), ("ensemble", objs.get("ensemble_best")),
                              ("joint", getattr(objs.get("joint"), "over_n", None))):
                if fit is None:
                    continue
                eff = data_efficiency(base, fit.E, ref, recipe_boot=None if fit.boot is None else fit.boot[:, 2])
                objs[f"eff_{name}"] = eff
                fits["efficiency"][name] = {k: v for k, v in eff.to_dict().items() if k != "baseline"}
    dist = plan.get("distill")
    if dist:
        from megarecipe.analysis.distill import final_loss
        taught = (_json(os.path.join(dist["student"], "run.json")).get("distill") or {}).get("members")
        s, single = final_loss(dist["student"]), final_loss(dist["single"])
        teacher = final_loss(dist["teacher"], taught)   # the members that taught, not a larger re-scored ensemble
        gap = single - teacher
        fits["distill"] = {"student": os.path.relpath(dist["student"], out), "student_loss": s,
                           "single": os.path.relpath(dist["single"], out), "single_loss": single,
                           "teacher": os.path.relpath(dist["teacher"], out), "teacher_loss": teacher,
                           "retained": (single - s) / gap if gap > 0 else None,
                           "student_beats_single": s < single}
    if plan.get("downstream"):
        from megarecipe.analysis.downstream import read_results
        fits["downstream"] = {label: {"dir": os.path.relpath(p, out), "tasks": read_results(p)}
                              for label, p in plan["downstream"].items()}
    return fits, objs


def _num(v, fmt=".4f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def _E(f: dict) -> str:
    if "error" in f:
        return f"no fit ({f['error']})"
    ci = f.get("ci", {}).get("E")
    return f"{_num(f['E'])}" + (f" [{_num(ci[0])}, {_num(ci[1])}]" if ci else "")


def _ci_of(f: dict):
    ci = f.get("ci", {}).get("E") if isinstance(f, dict) else None
    return (ci[0], ci[1]) if ci else (f.get("E"), f.get("E")) if isinstance(f, dict) and "E" in f else None


def plots(out: str, objs: dict, fits: dict) -> list[str]:
    from megarecipe.analysis import plots as P

    made = []
    curves = {k: objs[k] for k in ("standard", "regularized") if objs.get(k) is not None}
    if curves:
        made.append(P.plot_curves(curves, os.path.join(out, "loss_vs_params.png"), "parameters N (billions)",
                                  "loss vs parameters per recipe"))
    if objs.get("joint") is not None:
        made.append(P.plot_joint(objs["joint"], os.path.join(out, "joint.png")))
    for size, e in (fits.get("ensembles", {}).get("by_size") or {}).items():
        losses = e["val_loss_by_k"]
        path = os.path.join(out, f"loss_vs_members_{size}.png")
        made.append(P.plot_members(losses, [None] * len(losses), path))
    if objs.get("data_law") is not None:
        made.append(P.plot_curves({"standard data law": objs["data_law"]}, os.path.join(out, "data_law.png"),
                                  "unique training tokens D (billions)", "standard recipe: loss vs data"))
    for name in ("regularized", "ensemble", "joint"):
        if objs.get(f"eff_{name}") is not None:
            made.append(P.plot_efficiency(objs[f"eff_{name}"], os.path.join(out, f"efficiency_{name}.png"), name))
    if fits.get("distill"):
        made.append(_plot_distill(fits["distill"], os.path.join(out, "distill.png")))
    return made


def _plot_distill(d: dict, path: str) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["student alone", "distilled student", "teacher ensemble"]
    values = [d["single_loss"], d["student_loss"], d["teacher_loss"]]
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    ax.bar(labels, values, color=["#999999", "#1f77b4", "#d62728"])
    lo = min(values)
    ax.set_ylim(lo - 0.5 * (max(values) - lo + 1e-3) - 0.02, max(values) + 0.05)
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.3f}", ha="center", va="bottom", fontsize=9)
    ax.set_ylabel("validation loss")
    ax.set_title(f"distillation: retained {_num(d['retained'], '.0%') if d['retained'] is not None else 'n/a'}")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def verdict(fits: dict) -> list[str]:
    """Each of the paper's claims at this scale: held or not, with the numbers (interval overlap = not shown)."""
    lines = []

    def cmp(name_lo, f_lo, name_hi, f_hi):
        if not f_lo or not f_hi or "E" not in f_lo or "E" not in f_hi:
            lines.append(f"- {name_lo} vs {name_hi}: not fitted.")
            return
        lo_b, hi_a = _ci_of(f_lo)[1], _ci_of(f_hi)[0]
        if f_lo["E"] < f_hi["E"]:
            sure = "and the intervals do not overlap" if lo_b < hi_a else "but the intervals overlap"
            lines.append(f"- {name_lo} asymptote {_E(f_lo)} is below {name_hi} {_E(f_hi)}: held, {sure}.")
        else:
            lines.append(f"- {name_lo} asymptote {_E(f_lo)} is NOT below {name_hi} {_E(f_hi)}: did not hold here.")

    std, reg = fits.get("standard"), fits.get("regularized")
    ens = (fits.get("ensembles") or {})
    std_runs = fits["runs"].get("standard", {})
    if std_runs:
        losses = [v["val_loss"] for v in std_runs.values()]
        best = min(losses)
        lines.append(f"- Standard recipe (WD fixed): losses by size {', '.join(_num(v) for v in losses)}; best "
                     f"{_num(best)}; " + ("it gets worse past the best size (overfits)." if losses[-1] > best else
                                          "it still improves with size at this budget."))
    reg_runs = fits["runs"].get("regularized", {})
    if std_runs and reg_runs:
        sb, rb = min(v["val_loss"] for v in std_runs.values()), min(v["val_loss"] for v in reg_runs.values())
        lines.append(f"- Best regularized run {_num(rb)} vs best standard run {_num(sb)}: "
                     + ("regularized lower." if rb < sb else "regularized NOT lower."))
    cmp("regularized", reg, "standard", std)
    cmp("ensemble (best size, K -> inf)", ens.get("best_size_asymptote"), "regularized", reg)
    cmp("joint (K -> inf, then N -> inf)", ens.get("joint"), "ensemble (best size)", ens.get("best_size_asymptote"))
    for name, e in (fits.get("efficiency") or {}).items():
        v = e.get("efficiency")
        ci = e.get("ci")
        text = "unbounded (at or below the data law's asymptote)" if v is None else f"{v:.2f}x"
        if ci and ci[0] is not None:
            text += f" [{_num(ci[0], '.2f')}, {_num(ci[1], '.2f') if ci[1] is not None else 'inf'}]"
        lines.append(f"- Data efficiency of {name}: {text}; " + ("above 1." if v is None or v > 1 else "NOT above 1."))
    d = fits.get("distill")
    if d:
        lines.append(f"- Distilled student {_num(d['student_loss'])} vs the same student alone "
                     f"{_num(d['single_loss'])}: " + ("beats it" if d["student_beats_single"] else "does NOT beat it")
                     + f"; retained {_num(d['retained'], '.0%') if d['retained'] is not None else 'n/a'} of the "
                     f"teacher's gain (teacher {_num(d['teacher_loss'])}).")
    return lines


def markdown(recipe, plan: dict, stages: dict, fits: dict, figures: list[str], out: str) -> str:
    L = [f"# Recipe `{recipe.name}`: pre-training under infinite compute, at this scale", "",
         f"Written {time.strftime('%Y-%m-%d %H:%M')}. Every number below is read from [{FITS_JSON}]({FITS_JSON}); "
         f"each run's directory holds its config, run.json and TensorBoard events (`tensorboard --logdir {out}`).",
         "", "## What ran", "",
         f"- Data: `{recipe.data.dir}` (vocab {recipe.data.vocab_size}); budget D = {recipe.budget:,} unique tokens; "
         f"held-out loss on {recipe.data.eval_tokens:,} tokens.",
         "- Sizes: " + ", ".join(f"{s} ({v['params']:,} params)" for s, v in fits["runs"].get("standard", {}).items()),
         f"- Standard recipe (WD {recipe.standard_weight_decay:g}) and regularized recipe, one run per size: "
         + "; ".join(f"{s}: std lr {_num(fits['runs']['standard'][s]['lr'], 'g')} ep "
                     f"{fits['runs']['standard'][s]['epochs']}, reg lr {_num(v['lr'], 'g')} wd "
                     f"{_num(v['weight_decay'], 'g')} ep {v['epochs']}"
                     for s, v in fits["runs"].get("regularized", {}).items() if s in fits["runs"]["standard"]),
         "- Hyperparameters: " + ("found by the search in this call (`--search`, certificates under search/)."
                                   if plan.get("hyper") else "the certified values carried in the recipe file "
                                   "(`--search` redoes the search)."),
         ]
    ens = fits.get("ensembles") or {}
    if ens.get("by_size"):
        L.append(f"- Ensembles: K = 1..{recipe.ensemble.members} at " + ", ".join(ens["by_size"]) +
                 ("; member 1 is the regularized run, the others differ only by seed."
                  if not recipe.ensemble.member_shift else "; members use 2x epochs and 0.5x weight decay."))
    if fits.get("data_law", {}).get("points"):
        L.append(f"- Data law: the standard recipe at {fits['data_law']['size']} over D = " + ", ".join(
            f"{int(float(p['x']) * 1e9):,}" for p in fits["data_law"].get("points", [])) + " tokens.")
    L += ["", "| stage | wall s | CPU s | trainer starts |", "|---|---:|---:|---:|"]
    tot_w = tot_c = 0.0
    order = ("data", "standard", "regularized", "ensembles", "distill", "downstream", "fits+report")
    for name in sorted((n for n in stages if n != "last_call"), key=lambda n: order.index(n) if n in order else 99):
        t = stages[name]
        tot_w, tot_c = tot_w + t["wall_s"], tot_c + t["cpu_s"]
        L.append(f"| {name} | {t['wall_s']:.0f} | {t['cpu_s']:.0f} | {t['runs_started']} |")
    L += [f"| total | {tot_w:.0f} | {tot_c:.0f} | |", "",
          "Times add up the calls that did each stage's work (a stage killed and resumed counts both parts); a call "
          "that only read results back adds nothing. CPU s counts this process and every trainer it started.", ""]
    noise = fits["seed_sigma_dof"] > 0   # else the bootstrap resamples points only, which says nothing for 3
    L += ["## Fitted asymptotes (L = A / x^alpha + E, 95% bootstrap intervals)", "",
          (f"Intervals: {fits['bootstrap']} bootstrap resamples, each adding seed noise of standard deviation "
           f"{_num(fits['seed_sigma'])} (pooled over the ensemble members, {fits['seed_sigma_dof']} degrees of "
           f"freedom) to every point, as well as resampling points where there are more than 3." if noise else
           f"Intervals: {fits['bootstrap']} bootstrap resamples of the points alone: no seed-to-seed noise was "
           f"measured (no ensemble with 2 or more members), so a fit of 3 points has no meaningful interval."), "",
          "| recipe | E | alpha | points |", "|---|---|---|---|"]
    rows = [("standard (over N)", fits.get("standard")), ("regularized (over N)", fits.get("regularized")),
            ("ensemble, best size (over K)", ens.get("best_size_asymptote")),
            ("joint (E_N over N)", ens.get("joint")), ("standard data law (over D)", fits.get("data_law"))]
    for name, f in rows:
        if f:
            L.append(f"| {name} | {_E(f)} | {_num(f.get('alpha'), '.3g')} | {len(f.get('points', []))} |")
    for size, f in (ens.get("per_size") or {}).items():
        if isinstance(f, dict) and "E" in f:
            L.append(f"| ensemble {size} (over K) | {_E(f)} | {_num(f.get('alpha'), '.3g')} | "
                     f"{len(f.get('points', []))} |")
    notes = sorted({n for _, f in rows if f for n in f.get("notes", []) if not (noise and n.startswith("3 points"))})
    if notes:
        L += ["", *[f"Note: {n}." for n in notes]]
    if ens.get("by_size"):
        L += ["", "Ensemble held-out loss by K:", "", "| size | " + " | ".join(
            f"K={k}" for k in range(1, recipe.ensemble.members + 1)) + " |",
              "|---|" + "---:|" * recipe.ensemble.members]
        for size, e in ens["by_size"].items():
            L.append(f"| {size} | " + " | ".join(_num(v) for v in e["val_loss_by_k"]) + " |")
    if fits.get("efficiency"):
        L += ["", "## Data efficiency (standard tokens needed / D)", "", "| recipe | loss | efficiency | interval |",
              "|---|---:|---:|---|"]
        for name, e in fits["efficiency"].items():
            ci = e.get("ci")
            L.append(f"| {name} | {_num(e['recipe_loss'])} | "
                     f"{_num(e['efficiency'], '.2f') if e['efficiency'] is not None else 'unbounded'} | "
                     f"{'' if not ci else '[' + _num(ci[0], '.2f') + ', ' + _num(ci[1], '.2f') + ']'} |")
    d = fits.get("distill")
    if d:
        L += ["", "## Distillation", "",
              f"Teacher `{d['teacher']}` ({_num(d['teacher_loss'])}) into student `{d['student']}` "
              f"({_num(d['student_loss'])}); the same student trained alone `{d['single']}`: {_num(d['single_loss'])}. "
              f"Retained fraction (single - student) / (single - teacher) = "
              f"{_num(d['retained'], '.3f') if d['retained'] is not None else 'n/a'}."]
    if fits.get("downstream"):
        tasks = sorted({t for m in fits["downstream"].values() for t in m["tasks"]})
        L += ["", "## Downstream (accuracy; lm-eval)", "", "| model | " + " | ".join(tasks) + " | mean |",
              "|---|" + "---:|" * (len(tasks) + 1)]
        for label, m in fits["downstream"].items():
            accs = [m["tasks"].get(t, {}).get("acc") for t in tasks]
            have = [a for a in accs if a is not None]
            L.append(f"| {label} (`{m['dir']}`) | " + " | ".join(_num(a, '.3f') for a in accs) +
                     f" | {_num(sum(have) / len(have), '.3f') if have else 'n/a'} |")
        lim = recipe.downstream.limit
        for label, tasks_skipped in (plan.get("downstream_skipped") or {}).items():
            for task, why in tasks_skipped.items():
                if task in recipe.downstream.tasks:   # a task since dropped from the recipe is not news
                    L += ["", f"{task} was not scored for {label}: {why['why']}."]
        L.append("")
        L.append(f"{'First ' + str(lim) + ' examples per task' if lim else 'Every example'}; at this scale the "
                 f"models are near chance, so differences are mostly noise.")
    L += ["", "## Did the paper's ordering hold here?", "", *verdict(fits), ""]
    if figures:
        L += ["## Plots", "", *[f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in figures], ""]
    return "\n".join(L)


def write(out: str, recipe, plan: dict, stages: dict) -> str:
    fits, objs = compute(out, recipe, plan)
    atomic.write_json(os.path.join(out, FITS_JSON), _plain(fits))
    fits = _json(os.path.join(out, FITS_JSON))   # the report reads back exactly what was written
    figures = plots(out, objs, fits)
    path = os.path.join(out, REPORT_MD)
    atomic.write_text(path, markdown(recipe, plan, stages, fits, figures, out))
    return path


def _plain(obj):
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
