"""A ladder of searches: model sizes in order, each starting from the previous size's optimum, at one or more
token budgets D (data.train_tokens); then the scaling fits over the certified optima - loss over parameters per
budget, and over D per size (the data law; with --standard, the paper's baseline) - and OUT/report.md.

OUT/<size>_D<budget>/   one sweep each (sweep.py)
OUT/ladder.json         the plan, in order
OUT/report.md, fits.json, runs.csv, *.png
"""

from __future__ import annotations

import os
from pathlib import Path

from megarecipe import atomic
from megarecipe.analysis.runs import read_runs
from megarecipe.config.numbers import parse_count
from megarecipe.recipes import certificate
from megarecipe.recipes.search import SearchError
from megarecipe.recipes.status import LADDER_JSON
from megarecipe.recipes.sweep import Sweep
from megarecipe.rundir import RunDir


def parse_tokens(text: str) -> int:
    """100M -> 100000000, 1.5B, 200k, 1e9, 209715200."""
    return parse_count(text, "--tokens")


def tokens_text(n: int) -> str:
    for unit, size in (("B", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= size and n % (size // 100 or 1) == 0:
            return f"{n / size:g}{unit}"
    return str(n)


def size_label(config: str) -> str:
    return Path(config).stem


def sweep_name(config: str, budget: int | None) -> str:
    return size_label(config) + (f"_D{tokens_text(budget)}" if budget else "")


def run(
    configs: list[str],
    budgets: list[int | None],
    out: str,
    overrides: list[str],
    grid,
    how,
    log=print,
    command: str = "",
    n_boot: int = 100,
    seed_early: bool = False,
) -> dict:
    """Every (budget, size) search in order; returns sweep name -> certificate (None where it failed)."""
    plan = [(c, d) for d in budgets for c in configs]
    if len({sweep_name(c, d) for c, d in plan}) != len(plan):
        raise SearchError("--ladder: two configs share a file name; give each size its own file name")
    os.makedirs(out, exist_ok=True)
    atomic.write_json(
        os.path.join(out, LADDER_JSON),
        {
            "planned": [sweep_name(c, d) for c, d in plan],
            "configs": configs,
            "budgets": budgets,
            "overrides": overrides,
            "command": command,
        },
    )
    certs = {}
    for budget in budgets:
        start = None
        for config in configs:
            name = sweep_name(config, budget)
            extra = [f"data.train_tokens={budget}"] if budget else []
            sweep = Sweep(
                config, os.path.join(out, name), [*overrides, *extra], grid, how, log, title=name, seed_early=seed_early
            )
            try:
                certs[name] = sweep.run(start)
                start = certs[name]["centre"]
            except SearchError as e:
                log(f"[{name}] no certificate: {e}")
                certs[name] = None
    write_report(out, plan, certs, command, n_boot)
    return certs


def _point(cert: dict):

    facts = (RunDir(cert["run_dir"]).info() or {}).get("facts") or {}
    return facts.get("params"), facts.get("train_tokens")


def write_report(out: str, plan, certs: dict, command: str, n_boot: int = 100) -> list[str]:
    from megarecipe.analysis import plots, report
    from megarecipe.analysis.fit import FitError, Point, fit_points

    sections, figures, fits, notes = ["## Certificates", ""], [], {}, []
    for config, budget in plan:
        name = sweep_name(config, budget)
        cert = certs.get(name)
        sections.append(certificate.markdown(cert, name) if cert else f"### {name}\n\nNo certificate.\n")
    by_budget, by_size = {}, {}
    for config, budget in plan:
        cert = certs.get(sweep_name(config, budget))
        if not cert:
            continue
        params, tokens = _point(cert)
        name = sweep_name(config, budget)
        if params:
            by_budget.setdefault(tokens_text(tokens or budget or 0), []).append(Point(params / 1e9, cert["loss"], name))
        if tokens:
            by_size.setdefault(size_label(config), []).append(Point(tokens / 1e9, cert["loss"], name))
    for title, groups, x_text, png in (
        ("over parameters", by_budget, "parameters N (billions)", "fit_params.png"),
        ("over tokens", by_size, "unique training tokens D (billions)", "fit_tokens.png"),
    ):
        done = {}
        for label, pts in groups.items():
            try:
                done[label] = fit_points(pts, n_boot=n_boot)
            except FitError as e:
                notes.append(f"- No fit {title} for {label}: {e}.")
        if done:
            plots.plot_curves(done, os.path.join(out, png), x_text)
            figures.append(png)
            sections += [report.fit_markdown(f"Loss {title}, {label}", f, x_text) for label, f in done.items()]
            fits[title] = done
    if notes:
        sections += ["## Fits not made", "", *notes, ""]
    records, problems = read_runs([c["run_dir"] for c in certs.values() if c])
    data = {"mode": "ladder", "certificates": certs, "fits": fits}
    return report.write(out, "Locally optimal hyperparameters", command, records, problems, sections, figures, data)
