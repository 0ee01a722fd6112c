"""The recipe's report (OUT/REPORT.md, PNG plots beside it) from OUT/fits.json (megarecipe/analysis/recipe_fits.py).

Every number in REPORT.md is read from fits.json (the dict written first and read back), so the two cannot
disagree. N is in billions of parameters and D in billions of tokens in the fits; the text names sizes in K, M or
B parameters.
"""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np

from megarecipe import atomic
from megarecipe.analysis import plots as P
from megarecipe.analysis.plots import params_text
from megarecipe.analysis.recipe_fits import compute  # noqa: F401  (the report's numbers)
from megarecipe.analysis.recipe_plan import FITS_JSON, REPORT_MD, STAGES, RecipeFits, RecipePlan
from megarecipe.analysis.report import MISSING, number

ORDER = ("regularized", "ensemble", "joint")


def _json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _E(f: dict) -> str:
    if not isinstance(f, dict) or "error" in f:
        return f"no fit ({f.get('error') if isinstance(f, dict) else 'not run'})"
    ci = f.get("ci", {}).get("E")
    return f"{number(f['E'])}" + (f" [{number(ci[0])}, {number(ci[1])}]" if ci else "")


def _notes(f: dict, noise: bool) -> str:
    if not isinstance(f, dict):
        return ""
    notes = [n for n in f.get("notes", []) if not (noise and n.startswith("3 points"))]
    if noise and any(n.startswith("3 points") for n in f.get("notes", [])):
        notes.append("3 points for 3 parameters: the curve interpolates (no residual degrees of freedom)")
    return "; ".join(notes)


def _tokens(b: int) -> str:
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if b >= size:
            return f"{b / size:.3g}{unit}"
    return str(b)


def _eff(e: dict) -> str:
    v, ci = e.get("efficiency"), e.get("ci")
    text = "unbounded" if v is None else f"{v:.2f}x"
    if ci and ci[0] is not None:
        text += f" [{number(ci[0], '.2f')}, {number(ci[1], '.2f') if ci[1] is not None else 'inf'}]"
    return text


def plots(out: str, objs: dict, fits: RecipeFits) -> list[str]:

    made = []
    ref = objs["by_budget"].get(fits.budget_tokens, {})
    if ref.get("regularized") is not None:
        std = fits.at(fits.budget_tokens).get("standard_runs") or {}
        best = fits.at(fits.budget_tokens).get("best_standard")
        made.append(
            P.plot_params(
                {"regularized": ref["regularized"]},
                [(v["params"] / 1e9, v["val_loss"]) for v in std.values()],
                best and best["val_loss"],
                os.path.join(out, "loss_vs_params.png"),
                f"loss vs parameters at D = {_tokens(fits.budget_tokens)} tokens",
            )
        )
    if ref.get("joint") is not None:
        made.append(P.plot_joint(ref["joint"], os.path.join(out, "joint.png")))
    for size, e in ((fits.at(fits.budget_tokens).get("ensembles") or {}).get("by_size") or {}).items():
        losses = e["val_loss_by_k"]
        path = os.path.join(out, f"loss_vs_members_{size}.png")
        made.append(P.plot_members(losses, [None] * len(losses), path, title=f"ensemble of {size}: loss vs K"))
    if objs.get("data_law") is not None:
        made.append(
            P.plot_curves(
                {"standard, best size per D": objs["data_law"]},
                os.path.join(out, "data_law.png"),
                "unique training tokens D",
                "standard recipe: best loss over sizes vs data",
                unit="tokens",
            )
        )
    scaled = {k: f for k, f in (objs.get("data_scaling") or {}).items() if f is not None}
    if scaled:
        made.append(
            P.plot_curves(
                {f"{k} asymptote": f for k, f in scaled.items()},
                os.path.join(out, "asymptotes_vs_data.png"),
                "unique training tokens D",
                "asymptotes vs data",
                unit="tokens",
                ylabel="asymptote E",
            )
        )
    fitted = {"regularized (over N)": ref.get("regularized"), "data law (over D)": objs.get("data_law")}
    fitted = {k: f for k, f in fitted.items() if f is not None}
    if fitted:
        made.append(P.plot_reducible(fitted, os.path.join(out, "reducible_loss.png")))
    for (name, b), eff in (objs.get("efficiency") or {}).items():
        if b == fits.budget_tokens:
            made.append(P.plot_efficiency(eff, os.path.join(out, f"efficiency_{name}.png"), name))
    if fits.distill:
        made.append(P.plot_distill(fits.distill, os.path.join(out, "distill.png")))
    return made


def _what_ran(recipe, plan: RecipePlan, fits: RecipeFits) -> list[str]:
    ref = fits.at(recipe.budget)
    std = ref.get("standard_runs") or {}
    L = [
        "## What ran",
        "",
        f"- Data: `{recipe.data.dir}` (vocab {recipe.data.vocab_size}); reference budget D = {recipe.budget:,} unique "
        f"tokens, and D = "
        + ", ".join(f"{b:,}" for b in fits.budgets if b != recipe.budget)
        + f" for data scaling; held-out loss on {recipe.data.eval_tokens:,} tokens.",
        "- Sizes: " + ", ".join(f"{s} ({params_text(v['params'])} params)" for s, v in std.items()),
        "- Hyperparameters per (size, budget): "
        + (
            "found by the search in this call (`--search`, certificates under search/)."
            if plan.hyper
            else "the certified values carried in the recipe file (`--search` redoes the search)."
        ),
        f"- Seeds: every run's run.seed shifted by the recipe's seed = {getattr(recipe, 'seed', 0)}"
        + (" (the default seeds)." if not getattr(recipe, "seed", 0) else "."),
        "",
        "| recipe | D | size | LR | WD | epochs | val/loss | flags |",
        "|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for b in fits.budgets:
        row = fits.at(b)
        for section in ("standard", "regularized"):
            for size, v in (row.get(f"{section}_runs") or {}).items():
                flags = [*(v.get("edge") or []), *([] if v.get("tuned", True) else ["not tuned at this D"])]
                L.append(
                    f"| {section} | {_tokens(b)} | {size} | {number(v['lr'], 'g')} | {number(v['weight_decay'], 'g')} "
                    f"| {v['epochs']} | {number(v['val_loss'])} | {', '.join(flags)} |"
                )
    edged = sorted(
        {
            s
            for b in fits.budgets
            for sec in ("standard", "regularized")
            for s, v in (fits.at(b).get(f"{sec}_runs") or {}).items()
            if v.get("edge")
        }
    )
    untuned = sorted(
        {
            f"{sec} {s} at {_tokens(b)}"
            for b in fits.budgets
            for sec in ("standard", "regularized")
            for s, v in (fits.at(b).get(f"{sec}_runs") or {}).items()
            if not v.get("tuned", True)
        }
    )
    if untuned:
        L += [
            "",
            f"Not tuned at their budget ({', '.join(untuned)}): the recipe file carries no certified values "
            "there, so the reference budget's are used; `--search` tunes every (size, budget) pair.",
        ]
    if edged:
        L += [
            "",
            f"Values on their grid's edge ({', '.join(edged)}): the search tried no value beyond it, so the "
            "optimum may lie outside the grid; widen the grid there and search again to certify it.",
        ]
    e = recipe.ensemble
    if e.sizes:
        how = (
            "members 1..K differ only by seed; member 1 is the regularized run"
            if not e.member_shift
            else "members use the paper's shift from the regularized settings: 2x epochs (at most 128), 0.5x weight "
            "decay (at least 0.1), same LR"
            + (
                "; the best of the 5-point box around the shift (epochs and WD "
                "one grid step either way), ranked by its K-asymptote"
                if e.member_box
                else ""
            )
        )
        L += ["", f"- Ensembles: K = 1..{e.members} at " + ", ".join(e.sizes) + f" ({how})."]
        for key, hp in (fits.ensemble_hyper or {}).items():
            lr, wd = number(hp["lr"], "g"), number(hp["weight_decay"], "g")
            L.append(f"  - {key}: LR {lr}, WD {wd}, epochs {hp['epochs']}")
    return L


def _stage_table(stages: dict) -> list[str]:
    L = ["", "| stage | wall s | CPU s | trainer starts |", "|---|---:|---:|---:|"]
    tot_w = tot_c = 0.0
    for name in sorted((n for n in stages if n != "last_call"), key=lambda n: STAGES.index(n) if n in STAGES else 99):
        t = stages[name]
        tot_w, tot_c = tot_w + t["wall_s"], tot_c + t["cpu_s"]
        L.append(f"| {name} | {t['wall_s']:.0f} | {t['cpu_s']:.0f} | {t['runs_started']} |")
    return L + [
        f"| total | {tot_w:.0f} | {tot_c:.0f} | |",
        "",
        "Times add up the calls that did each stage's work (a stage killed and resumed counts both parts); "
        "a call that only read results back adds nothing. CPU s counts this process and every trainer it "
        "started.",
        "",
    ]


def _fits(recipe, fits: RecipeFits) -> list[str]:
    noise = fits.seed_sigma_dof > 0
    L = [
        "## The standard recipe: best run per budget",
        "",
        "The standard recipe overfits as N grows, so no asymptote is fitted to it (as in the paper): it is compared "
        "by its best run over sizes."
        + (
            f" Seed-to-seed spread: standard deviation {number(fits.seed_sigma)} "
            f"(pooled over the ensemble members, {fits.seed_sigma_dof} degrees of "
            f"freedom)."
            if noise
            else " No seed spread was measured (no ensemble)."
        ),
        "",
        "| D | best size | best val/loss | every size |",
        "|---:|---|---:|---|",
    ]
    for b in fits.budgets:
        row = fits.at(b)
        best = row.get("best_standard")
        if best:
            every = ", ".join(f"{s} {number(v['val_loss'])}" for s, v in row["standard_runs"].items())
            spread = f" ± {number(best['seed_sd'])}" if best.get("seed_sd") else ""
            L.append(f"| {_tokens(b)} | {best['size']} | {number(best['val_loss'])}{spread} | {every} |")
    L += [
        "",
        "## Fitted asymptotes (L = A / x^alpha + E, 95% bootstrap intervals)",
        "",
        (
            f"Intervals: {fits.bootstrap} bootstrap resamples, each adding to every run's loss a draw of the seed "
            f"noise (standard deviation {number(fits.seed_sigma)}), shared by every quantity the run enters, and "
            f"refitting every point (the sizes, member counts and budgets are a chosen design, so no point is "
            f"left out): an interval is the spread seed noise alone gives. An E interval reaching 0 means the "
            f"points do not pin the asymptote beyond that noise."
            if noise
            else "Intervals: none: no seed-to-seed noise was measured (no ensemble with 2 or more members), so a fit "
            "of 3 points has no meaningful interval."
        ),
        "",
        "| recipe | D | E | alpha | points | note |",
        "|---|---:|---|---|---:|---|",
    ]

    def add(name, b, f):
        if f:
            L.append(
                f"| {name} | {_tokens(b)} | {_E(f)} | {number(f.get('alpha'), '.3g')} | "
                f"{len(f.get('points', []))} | {_notes(f, noise)} |"
            )

    for b in fits.budgets:
        row = fits.at(b)
        ens = row.get("ensembles") or {}
        add("regularized (over N)", b, row.get("regularized"))
        for size, f in (ens.get("per_size") or {}).items():
            add(f"ensemble {size} (over K)", b, f)
        add("joint (E_N over N)", b, ens.get("joint") if ens else None)
    law = fits.data_law
    if law:
        add("standard data law (best over sizes, over D)", recipe.budget, law)
    for name, f in (fits.data_scaling or {}).items():
        add(f"{name} asymptote (over D)", recipe.budget, f)
    ref = fits.at(recipe.budget).get("ensembles") or {}
    if ref.get("by_size"):
        n = max(len(e["val_loss_by_k"]) for e in ref["by_size"].values())
        L += [
            "",
            f"Ensemble held-out loss by K at D = {_tokens(recipe.budget)}:",
            "",
            "| size | " + " | ".join(f"K={k}" for k in range(1, n + 1)) + " |",
            "|---|" + "---:|" * n,
        ]
        for size, e in ref["by_size"].items():
            L.append(f"| {size} | " + " | ".join(number(v) for v in e["val_loss_by_k"]) + " |")
    for key, box in (fits.member_box or {}).items():
        L += [
            "",
            f"Member box for {key} (the chosen point has the lowest K-asymptote):",
            "",
            "| epochs | WD | K-asymptote | loss at largest K | chosen |",
            "|---:|---:|---:|---:|---|",
        ]
        for i, p in enumerate(box["points"]):
            L.append(
                f"| {p['epochs']} | {number(p['weight_decay'], 'g')} | {number(p['k_asymptote'])} | "
                f"{number(p['val_loss_by_k'][-1])} | {'yes' if i == box['chosen'] else ''} |"
            )
    effs = [(b, fits.at(b).get("efficiency") or {}) for b in fits.budgets]
    if any(e for _, e in effs):
        L += [
            "",
            "## Data efficiency",
            "",
            "Efficiency at D = D_base(the recipe's asymptote) / D_base(the best standard loss at D), D_base "
            "inverting the standard data law fitted on the best standard loss over sizes at each budget.",
            "",
            "| D | best standard | recipe | asymptote | efficiency [95%] |",
            "|---:|---:|---|---:|---|",
        ]
        for b, e in effs:
            for name, v in sorted(e.items(), key=lambda kv: ORDER.index(kv[0])):
                L.append(
                    f"| {_tokens(b)} | {number(v['reference_loss'])} | {name} | {number(v['recipe_loss'])} "
                    f"| {_eff(v)} |"
                )
    return L


def _distill(fits: RecipeFits) -> list[str]:
    d = fits.distill
    if not d:
        return []
    hp = d.get("hyper") or {}
    L = [
        "",
        "## Distillation (sequence-level, the paper's)",
        "",
        f"Each teacher samples {d.get('synthetic_tokens') or 0:,} tokens at T = {number(d.get('temperature'), 'g')}; "
        f"the {d['size']} student trains on real data mixed with them at the synthetic share w, LR "
        f"{number(hp.get('lr'), 'g')}, WD {number(hp.get('weight_decay'), 'g')}, {hp.get('epochs')} epochs of the real "
        f"data. The same student alone (`{d['single']}`): {number(d['single_loss'])}.",
        "",
        "| teacher | members | w | teacher loss | student loss | vs alone | retained |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for r in d["sequence"]:
        name = f"{r['teacher']} ({r['teacher_size']}{', self-distillation' if r['self'] else ''})"
        L.append(
            f"| {name} | {r['members']} | {r['weight']:g} | {number(r['teacher_loss'])} | {number(r['student_loss'])} "
            f"| {'beats it' if r['beats_single'] else 'does NOT beat it'} | "
            f"{number(r['retained'], '.0%') if r['retained'] is not None else ''} |"
        )
    kd = d.get("logit_kd")
    if kd:
        L.append(
            f"| extension: token-level logit KD from {kd['teacher']} (alpha {number(kd.get('alpha'), 'g')}) | | | "
            f"{number(kd['teacher_loss'])} | {number(kd['student_loss'])} | "
            f"{'beats it' if kd['beats_single'] else 'does NOT beat it'} | "
            f"{number(kd['retained'], '.0%') if kd['retained'] is not None else ''} |"
        )
    pe = d.get("paper_experiment")
    if pe:
        L += [
            "",
            f"On the paper's experiment (the ensemble teacher at w = {pe['weight']:g}; the paper: 83%), the "
            f"student retains (alone - student) / (alone - teacher) = "
            f"{number(pe['retained'], '.3f') if pe['retained'] is not None else MISSING} of the teacher's gain.",
        ]
    return L


def _downstream(recipe, plan: RecipePlan, fits: RecipeFits) -> list[str]:
    if not fits.downstream:
        return []
    tasks = sorted({t for m in fits.downstream.values() for t in m["tasks"]})
    L = [
        "",
        "## Downstream (accuracy; lm-eval)",
        "",
        "| model | " + " | ".join(tasks) + " | mean |",
        "|---|" + "---:|" * (len(tasks) + 1),
    ]
    for label, m in fits.downstream.items():
        accs = [m["tasks"].get(t, {}).get("acc") for t in tasks]
        have = [a for a in accs if a is not None]
        L.append(
            f"| {label} (`{m['dir']}`) | "
            + " | ".join(number(a, ".3f") for a in accs)
            + f" | {number(sum(have) / len(have), '.3f') if have else MISSING} |"
        )
    lim = recipe.downstream.limit
    for label, tasks_skipped in (plan.downstream_skipped or {}).items():
        for task, why in tasks_skipped.items():
            if task in recipe.downstream.tasks:  # a task since dropped from the recipe is not news
                L += ["", f"{task} was not scored for {label}: {why['why']}."]
    L += [
        "",
        f"{'First ' + str(lim) + ' examples per task' if lim else 'Every example'}; at this scale the "
        f"models are near chance, so differences are mostly noise.",
    ]
    return L


def verdict(fits: RecipeFits) -> list[str]:
    """Each of the paper's orderings at this scale with its paired-bootstrap probability."""
    lines = []
    for o in fits.orderings:
        if o["verdict"] == "not measured":
            lines.append(f"- {o['claim']}: **not measured** (no fit).")
            continue
        p = (
            f"P = {o['p']:.2f} over {o['resamples']} paired resamples"
            if o.get("p") is not None
            else "no seed noise measured, so no probability"
        )
        lines.append(f"- {o['claim']}: {number(o['lhs'])} vs {number(o['rhs'])}; {p}: **{o['verdict']}**.")
    for b in fits.budgets:
        effs = (fits.at(b).get("efficiency") or {}).items()
        for name, e in sorted(effs, key=lambda kv: ORDER.index(kv[0])):
            v, ci = e.get("efficiency"), e.get("ci")
            sure = (
                ""
                if not ci or ci[0] is None
                else (" (its interval is above 1)" if ci[0] > 1 else " (its interval reaches 1)")
            )
            lines.append(
                f"- Data efficiency of {name} at D = {_tokens(b)}: {_eff(e)}; "
                + ("above 1" if v is None or v > 1 else "NOT above 1")
                + f"{sure}."
            )
    return lines


def markdown(recipe, plan: RecipePlan, stages: dict, fits: RecipeFits, figures: list[str], out: str) -> str:
    L = [
        f"# Recipe `{recipe.name}`: pre-training under infinite compute, at this scale",
        "",
        f"Written {time.strftime('%Y-%m-%d %H:%M')}. Every number below is read from [{FITS_JSON}]({FITS_JSON}); "
        f"each run's directory holds its config, run.json and TensorBoard events (`tensorboard --logdir {out}`).",
        "",
        *_what_ran(recipe, plan, fits),
        *_stage_table(stages),
        *_fits(recipe, fits),
        *_distill(fits),
        *_downstream(recipe, plan, fits),
        "",
        "## Did the paper's orderings hold here?",
        "",
        'Each is judged by a paired bootstrap over seed noise: "held" when it holds in at least '
        '95% of the resamples, "held in the point estimate" when it holds in the measured values only.',
        "",
        *verdict(fits),
        "",
    ]
    if figures:
        L += ["## Plots", "", *[f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in figures], ""]
    return "\n".join(L)


def write(out: str, recipe, plan: RecipePlan, stages: dict) -> str:
    fits, objs = compute(out, recipe, plan)
    atomic.write_json(os.path.join(out, FITS_JSON), _plain(fits.to_dict()))
    written = _json(os.path.join(out, FITS_JSON))  # the report reads back exactly what was written
    fits = RecipeFits.from_dict(_in_size_order(written, [s.name for s in recipe.sizes]))
    figures = plots(out, objs, fits)
    path = os.path.join(out, REPORT_MD)
    atomic.write_text(path, markdown(recipe, plan, stages, fits, figures, out))
    return path


def _in_size_order(obj, sizes: list[str]):
    """fits.json's maps keyed by size, back in the recipe file's order of sizes (smallest first, as written),
    not the JSON file's sorted keys (which put h8 after h64)."""
    if isinstance(obj, list):
        return [_in_size_order(v, sizes) for v in obj]
    if not isinstance(obj, dict):
        return obj
    items = [(k, _in_size_order(v, sizes)) for k, v in obj.items()]
    ranks = [_size_rank(k, sizes) for k, _ in items]
    if items and None not in ranks:
        items = [kv for _, kv in sorted(zip(ranks, items, strict=True), key=lambda r: r[0])]
    return dict(items)


def _size_rank(key: str, sizes: list[str]) -> tuple | None:
    """A run key's place: its size in the recipe's order, the reference budget (SIZE) before another
    (SIZE_D<tokens>, by tokens); None for a key that names no size of the recipe."""
    if key in sizes:
        return sizes.index(key), -1
    size, _, tokens = key.rpartition("_D")
    if size in sizes and tokens.isdigit():
        return sizes.index(size), int(tokens)
    return None


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
