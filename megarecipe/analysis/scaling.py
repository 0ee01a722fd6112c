"""Scaling-law fits over run directories (or a table): which points to fit, the fits, and their reports.

What `tools/fit_scaling.py` does, without the command line: read the runs, choose each curve's points (the best run
where several share x), fit L(x) = A / x^alpha + E with megarecipe.analysis.fit (the one fitter), and write
report.md, fits.json, runs.csv and the plots. Lines meant for the terminal go to a `log` the caller gives, the runs
left out to `Problems`, whose `note` the caller chooses too.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable

from megarecipe import errors
from megarecipe.analysis.fit import FitError, Point, data_efficiency, fit_points, joint_asymptote
from megarecipe.analysis.runs import RunReadError, check_same_heldout, format_table, read_runs

OVER = {  # --over name -> (RunRecord field, divisor, axis text)
    "params": ("params", 1e9, "parameters N (billions)"),
    "params_non_embedding": ("params_non_embedding", 1e9, "non-embedding parameters (billions)"),
    "tokens": ("train_tokens", 1e9, "unique training tokens D (billions)"),
    "members": (None, 1, "ensemble members K"),
}


class ScalingError(errors.UserError):
    """Runs or a table that cannot be fitted as asked; the message says why."""


def _quiet(line: str) -> None:
    pass


class Problems(list):
    """(path, why) of each run left out of the fits, in the order found; each also told to `note` as one line."""

    def __init__(self, note: Callable[[str], None] = _quiet):
        super().__init__()
        self.note = note

    def left_out(self, path: str, why: str) -> None:
        self.append((path, why))
        self.note(f"left out {path}: {why}")

    def not_used(self, path: str, why: str) -> None:
        self.append((path, why))
        self.note(f"not used {path}: {why}")


def read(paths, problems: Problems, log: Callable[[str], None] = _quiet):
    """The usable runs of `paths` (their table to `log`); the unreadable ones go to `problems`."""
    records, bad = read_runs(paths)
    try:
        check_same_heldout(records)
    except RunReadError as e:
        raise ScalingError(str(e)) from None
    for path, why in bad:
        problems.left_out(path, why)
    if not records:
        raise ScalingError("no usable runs" + (f" ({len(bad)} left out, see above)" if bad else ""))
    log(format_table(records))
    return records


def _skip(problems: Problems | None, path: str, why: str) -> None:
    if problems is not None:
        problems.not_used(path, why)


def group_label(records, by):
    names = [r.name for r in records]
    if by == "prefix":
        return lambda r: r.name.split("-", 1)[0]
    common = names[0]
    if len(set(names)) > 1:  # cut the shared prefix back to a whole name part: reg-150m-lr1e-3, reg-300m.. -> reg
        common = os.path.commonprefix(names)
        common = common[: max(common.rfind("-"), common.rfind("_"), 0)]
    return lambda r: common or "runs"


def run_points(records, over, problems, by="none"):
    """label -> Points, from each run's final loss (or each K of its ensemble losses)."""
    field, scale, _ = OVER[over]
    label = group_label(records, by)
    sizes = {}
    for r in records:
        sizes.setdefault(r.params, []).append(r)
    if over == "members" and len(sizes) > 1:  # one L(K) per model size: merged, the best per K would be fitted
        names = {id(r): group_label(same, by)(r) for same in sizes.values() for r in same}
        if len(set(names.values())) < len(sizes):
            names = {id(r): f"{names[id(r)]} N={r.params or 0:,}" for r in records}
        label = lambda r: names[id(r)]  # noqa: E731
    groups = {}
    for r in records:
        if over == "members":
            if not r.ensemble_losses:
                _skip(problems, r.path, "no ensemble/val_loss (not an ensemble evaluation)")
                continue
            pts = [Point(float(k), v, f"{r.name} K={k}") for k, v in r.ensemble_losses.items()]
        else:
            x = getattr(r, field)
            if x is None:
                _skip(problems, r.path, f"no run/{field} scalar")
                continue
            if r.final_val_loss is None:
                _skip(problems, r.path, "no val/loss (an ensemble evaluation?)")
                continue
            pts = [Point(x / scale, r.final_val_loss, r.name)]
        groups.setdefault(label(r), []).extend(pts)
    if not groups:
        raise ScalingError(f"none of the runs can be fitted over {over}")
    return groups


def ensemble_curves(records, problems):
    """N (billions) -> the Points of L(K) of every ensemble evaluation of that size."""
    curves = {}
    for r in records:
        if not r.ensemble_losses:
            _skip(problems, r.path, "no ensemble/val_loss (not an ensemble evaluation)")
        elif r.params is None:
            _skip(problems, r.path, "no run/params scalar")
        else:
            curves.setdefault(r.params / 1e9, []).extend(
                Point(float(k), v, f"{r.name} K={k}") for k, v in r.ensemble_losses.items()
            )
    return curves


def read_table(path):
    """Rows x,loss[,group]; a header row and '#' comments are allowed. Returns (group -> Points, x name)."""
    groups, x_name, header = {}, "x", False
    try:
        with open(path, newline="", encoding="utf-8") as f:
            text = f.read()
        if "\0" in text:
            raise UnicodeError("it holds NUL bytes")
    except OSError as e:
        raise ScalingError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeError as e:  # a binary file
        raise ScalingError(f"{path} is not a text table ({e}); give a CSV of x,loss[,group] rows") from None
    rows = list(csv.reader(io.StringIO(text)))
    for i, row in enumerate(rows, 1):
        row = [c.strip() for c in row]
        if not row or not any(row) or row[0].startswith("#"):
            continue
        try:
            x, loss = float(row[0]), float(row[1])
        except (ValueError, IndexError):
            if not groups and not header:
                x_name, header = row[0] or "x", True
                continue
            raise ScalingError(f"{path} line {i}: expected x,loss[,group], got {','.join(row)!r}") from None
        group = row[2] if len(row) > 2 and row[2] else "points"
        groups.setdefault(group, []).append(Point(x, loss, f"{os.path.basename(path)} line {i}"))
    if not groups:
        raise ScalingError(f"{path} has no x,loss rows")
    return groups, x_name


def fit_groups(groups, fit_kw: dict, log: Callable[[str], None] = _quiet):
    """label -> Fit of each group's points (each fit's formula to `log` as it is made)."""
    fits = {}
    for label, pts in groups.items():
        try:
            fits[label] = fit_points(pts, **fit_kw)
        except FitError as e:
            raise FitError(f"{label}: {e}") from None
        log(f"{label}: {fits[label].formula()}  (RMSE {fits[label].rmse:.2g})")
    return fits


def curves_report(out, fits, x_text, records, problems, command, title):
    """report.md, fits.json, runs.csv and fit.png of one or more fitted curves; returns the paths written."""
    from megarecipe.analysis import plots, report

    png = "fit.png"
    plots.plot_curves(fits, os.path.join(out, png), x_text)
    sections = [report.fit_markdown(label, fit, x_text) for label, fit in fits.items()]
    return report.write(
        out, title, command, records, problems, sections, [png], {"mode": title, "x": x_text, "fits": fits}
    )


def table_report(out, path, fit_kw, command, log=_quiet):
    """Fit the groups of the table at `path` (rows x,loss[,group], x as given) and write their report."""
    groups, x_name = read_table(path)
    fits = fit_groups(groups, fit_kw, log)
    return curves_report(out, fits, x_name, [], Problems(), command, f"Fit of {os.path.basename(path)}")


def over_report(out, paths, over, by, fit_kw, command, problems, log=_quiet):
    """Fit the runs' final loss (or their ensembles' L(K)) over `over`, one curve per group; write the report."""
    records = read(paths, problems, log)
    fits = fit_groups(run_points(records, over, problems, by), fit_kw, log)
    return curves_report(out, fits, OVER[over][2], records, problems, command, f"Loss over {over}")


def joint_report(out, paths, fit_kw, command, problems, log=_quiet):
    """The joint asymptote: L(K) per model size N, then E_N over N; write its report."""
    from megarecipe.analysis import plots, report

    records = read(paths, problems, log)
    curves = ensemble_curves(records, problems)
    j = joint_asymptote(curves, **fit_kw)
    for n, fit in j.per_n.items():
        log(f"N = {n:.4g}B: {fit.formula()}  ->  E_N = {fit.E:.4f}")
    ci = j.over_n.ci.get("E")
    log(f"joint: {j.over_n.formula()}  ->  E = {j.E:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""))
    plots.plot_joint(j, os.path.join(out, "joint.png"))
    stage1 = [{"N_billions": n, **f.to_dict()} for n, f in j.per_n.items()]
    data = {"mode": "joint", "E": j.E, "stage1": stage1, "stage2": j.over_n}
    return report.write(
        out,
        "Joint asymptote (ensembles, then model size)",
        command,
        records,
        problems,
        [report.joint_markdown(j)],
        ["joint.png"],
        data,
    )


def recipe_loss(recipe_paths, given_loss, fit_kw, problems, log=_quiet):
    """The recipe's loss, its bootstrap samples, a description, and its records: the loss given, else the joint
    asymptote of its ensembles (or the best K-limit), else the asymptote of its L(N), else its best run."""
    if given_loss is not None:
        return given_loss, None, "given with --recipe-loss", []
    records = read(recipe_paths, problems, log)
    ens = [r for r in records if r.ensemble_losses]
    if ens:
        curves = ensemble_curves(ens, None)
        if len(curves) >= 3:
            j = joint_asymptote(curves, **fit_kw)
            return j.E, _col(j.over_n.boot, 2), "joint asymptote: K-limit per N, then N-limit", records
        fits = {n: fit_points(pts, **fit_kw) for n, pts in curves.items()}
        n = min(fits, key=lambda n: fits[n].E)
        return fits[n].E, _col(fits[n].boot, 2), f"K-limit of the ensembles at N = {n:.4g}B", records
    groups = run_points(records, "params", problems)
    pts = [p for g in groups.values() for p in g]
    if len({round(p.x, 9) for p in pts}) >= 3:
        fit = fit_points(pts, **fit_kw)
        return fit.E, _col(fit.boot, 2), "asymptote E of the recipe's L(N)", records
    best = min(pts, key=lambda p: p.loss)
    return best.loss, None, f"best final loss, run {best.source} (fewer than 3 model sizes to fit)", records


def _col(boot, j):
    return None if boot is None else boot[:, j]


def reference_budget(reference_tokens, recipe_records, baseline):
    """The budget (billions of tokens) the recipe's loss stands for, and where it came from."""
    if reference_tokens is not None:
        if reference_tokens <= 0:
            raise ScalingError("--reference-tokens must be > 0")
        return reference_tokens / 1e9, "given with --reference-tokens"
    budgets = {r.train_tokens for r in recipe_records if r.train_tokens}
    if len(budgets) > 1:
        raise ScalingError(
            f"the recipe runs differ in train_tokens ({', '.join(map(str, sorted(budgets)))}); pass --reference-tokens"
        )
    if budgets:
        return budgets.pop() / 1e9, "the recipe runs' train_tokens"
    return float(baseline.x.min()), "the baseline's smallest budget (none given)"


def efficiency_report(
    out, baseline_paths, recipe_paths, given_loss, reference_tokens, level, fit_kw, command, problems, log=_quiet
):
    """Data efficiency: the baseline's data law L(D), the recipe's loss, the budget the baseline would need for it
    over the recipe's; write its report."""
    from megarecipe.analysis import plots, report

    base_records = read(baseline_paths, problems, log)
    groups = run_points(base_records, "tokens", problems)
    base = fit_points([p for g in groups.values() for p in g], **fit_kw)
    log(f"baseline: {base.formula()}  (D in billions of tokens)")
    loss, boot, how, recipe_records = recipe_loss(recipe_paths, given_loss, fit_kw, problems, log)
    ref, ref_how = reference_budget(reference_tokens, recipe_records, base)
    eff = data_efficiency(base, loss, ref, recipe_boot=boot, level=level)
    ci = f" [{eff.ci[0]:.2f}, {eff.ci[1]:.2f}]" if eff.ci else ""
    log(f"recipe loss {loss:.4f} ({how}); reference {ref:.4g}B tokens -> data efficiency {eff.value:.2f}x{ci}")
    plots.plot_efficiency(eff, os.path.join(out, "efficiency.png"))
    sections = [
        report.efficiency_markdown(eff, how) + f"\nReference budget: {ref_how}.\n",
        report.fit_markdown("Baseline data law", base, OVER["tokens"][2]),
    ]
    data = {"mode": "data-efficiency", "recipe_loss_from": how, "reference_from": ref_how, "efficiency": eff}
    return report.write(
        out,
        "Data efficiency",
        command,
        base_records + recipe_records,
        problems,
        sections,
        ["efficiency.png"],
        data,
    )
