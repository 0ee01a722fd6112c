"""Scaling-law fits L(x) = A / x^alpha + E from run directories' TensorBoard events (or a table).

  python tools/fit_scaling.py runs/reg-* --over params --out reports/reg          # L(N), N in billions
  python tools/fit_scaling.py runs/ens-300m-* --over members --out reports/ens    # L(K) of ensembles
  python tools/fit_scaling.py --joint runs/ens-* --out reports/joint              # K-limit per N, then N-limit
  python tools/fit_scaling.py --data-efficiency --baseline runs/std-* --recipe runs/joint-* --out reports/eff
  python tools/fit_scaling.py --points table.csv --out reports/paper             # rows x,loss[,group]

Where several runs share x (a sweep) the best one is used. Writes OUT/report.md, fits.json, runs.csv, *.png.
"""

import argparse
import csv
import io
import os
import shlex
import sys

from megarecipe import errors
from megarecipe.analysis.fit import FitError, Point
from megarecipe.analysis.runs import RunReadError
from megarecipe.cli.common import Parser

OVER = {  # --over name -> (RunRecord field, divisor, axis text)
    "params": ("params", 1e9, "parameters N (billions)"),
    "params_non_embedding": ("params_non_embedding", 1e9, "non-embedding parameters (billions)"),
    "tokens": ("train_tokens", 1e9, "unique training tokens D (billions)"),
    "members": (None, 1, "ensemble members K"),
}


class UsageError(errors.UserError):
    pass


def parse(argv):
    ap = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*", help="run directories (events in RUN/tb or RUN)")
    ap.add_argument("--out", required=True, help="report folder to write")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--over", choices=sorted(OVER), help="fit the runs' final loss over this quantity")
    mode.add_argument("--joint", action="store_true", help="ensembles: L(K) per N, then E_N over N")
    mode.add_argument("--data-efficiency", action="store_true", help="needs --baseline and --recipe/--recipe-loss")
    mode.add_argument("--points", metavar="CSV", help="fit rows x,loss[,group] of a table (x used as given)")
    ap.add_argument("--baseline", nargs="+", default=[], metavar="RUN", help="baseline runs over token budgets")
    ap.add_argument("--recipe", nargs="+", default=[], metavar="RUN", help="the recipe's runs")
    ap.add_argument("--recipe-loss", type=float, help="the recipe's loss (asymptote), instead of --recipe")
    ap.add_argument(
        "--reference-tokens",
        type=float,
        help="budget the recipe was run at (tokens); default: the recipe runs' train_tokens",
    )
    ap.add_argument(
        "--group-by",
        choices=["none", "prefix"],
        default="none",
        help="prefix: one curve per run-name prefix (text before the first '-')",
    )
    ap.add_argument("--loss", choices=["lsq", "huber"], default="lsq", help="fit objective (default: lsq)")
    ap.add_argument("--huber-delta", type=float, default=0.01, help="residual where Huber turns linear")
    ap.add_argument("--bootstrap", type=int, default=200, help="resamples for intervals (0: none)")
    ap.add_argument("--level", type=float, default=0.95, help="interval level")
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    ap.add_argument(
        "--no-progress", action="store_true", help="no progress bars (shown for bootstraps taking over 0.5 s)"
    )
    args = ap.parse_args(argv)
    if not (args.over or args.joint or args.data_efficiency or args.points):
        ap.error("say what to fit: --over params|tokens|members, --joint, --data-efficiency or --points CSV")
    if args.data_efficiency:
        if not args.baseline:
            ap.error("--data-efficiency needs --baseline RUN...")
        if not args.recipe and args.recipe_loss is None:
            ap.error("--data-efficiency needs --recipe RUN... or --recipe-loss L")
    elif args.baseline or args.recipe or args.recipe_loss is not None:
        ap.error("--baseline/--recipe/--recipe-loss go with --data-efficiency")
    if args.points and args.runs:
        ap.error("give either --points CSV or run directories, not both")
    if (args.over or args.joint) and not args.runs:
        ap.error("no run directories given")
    if not 0 < args.level < 1:
        ap.error("--level must be between 0 and 1")
    if args.bootstrap < 0:
        ap.error("--bootstrap must be >= 0")
    if not args.huber_delta > 0:
        ap.error("--huber-delta must be > 0")
    return args


def fit_kw(args):
    return dict(
        loss=args.loss,
        huber_delta=args.huber_delta,
        n_boot=args.bootstrap,
        level=args.level,
        seed=args.seed,
        progress=not args.no_progress,
    )


def read(paths, problems):
    from megarecipe.analysis.runs import RunReadError, check_same_heldout, format_table, read_runs

    records, bad = read_runs(paths)
    try:
        check_same_heldout(records)
    except RunReadError as e:
        raise UsageError(str(e)) from None
    problems.extend(bad)
    for path, why in bad:
        print(f"left out {path}: {why}", file=sys.stderr)
    if records:
        print(format_table(records))
    if not records:
        raise UsageError("no usable runs" + (f" ({len(bad)} left out, see above)" if bad else ""))
    return records


def skip(problems, path, why):
    if problems is not None:
        problems.append((path, why))
        print(f"not used {path}: {why}", file=sys.stderr)


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
                skip(problems, r.path, "no ensemble/val_loss (not an ensemble evaluation)")
                continue
            pts = [Point(float(k), v, f"{r.name} K={k}") for k, v in r.ensemble_losses.items()]
        else:
            x = getattr(r, field)
            if x is None:
                skip(problems, r.path, f"no run/{field} scalar")
                continue
            if r.final_val_loss is None:
                skip(problems, r.path, "no val/loss (an ensemble evaluation?)")
                continue
            pts = [Point(x / scale, r.final_val_loss, r.name)]
        groups.setdefault(label(r), []).extend(pts)
    if not groups:
        raise UsageError(f"none of the runs can be fitted over {over}")
    return groups


def ensemble_curves(records, problems):
    curves = {}
    for r in records:
        if not r.ensemble_losses:
            skip(problems, r.path, "no ensemble/val_loss (not an ensemble evaluation)")
        elif r.params is None:
            skip(problems, r.path, "no run/params scalar")
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
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeError as e:  # a binary file
        raise UsageError(f"{path} is not a text table ({e}); give a CSV of x,loss[,group] rows") from None
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
            raise UsageError(f"{path} line {i}: expected x,loss[,group], got {','.join(row)!r}") from None
        group = row[2] if len(row) > 2 and row[2] else "points"
        groups.setdefault(group, []).append(Point(x, loss, f"{os.path.basename(path)} line {i}"))
    if not groups:
        raise UsageError(f"{path} has no x,loss rows")
    return groups, x_name


def fit_groups(groups, args):
    from megarecipe.analysis.fit import fit_points

    fits = {}
    for label, pts in groups.items():
        try:
            fits[label] = fit_points(pts, **fit_kw(args))
        except FitError as e:
            raise FitError(f"{label}: {e}") from None
        print(f"{label}: {fits[label].formula()}  (RMSE {fits[label].rmse:.2g})")
    return fits


def curves_report(args, fits, x_text, records, problems, command, title):
    from megarecipe.analysis import plots, report

    png = "fit.png"
    plots.plot_curves(fits, os.path.join(args.out, png), x_text)
    sections = [report.fit_markdown(label, fit, x_text) for label, fit in fits.items()]
    return report.write(
        args.out, title, command, records, problems, sections, [png], {"mode": title, "x": x_text, "fits": fits}
    )


def recipe_loss(args, problems):
    """The recipe's loss, its bootstrap samples, a description, and its records."""
    from megarecipe.analysis.fit import fit_points, joint_asymptote

    if args.recipe_loss is not None:
        return args.recipe_loss, None, "given with --recipe-loss", []
    records = read(args.recipe, problems)
    kw = fit_kw(args)
    ens = [r for r in records if r.ensemble_losses]
    if ens:
        curves = ensemble_curves(ens, None)
        if len(curves) >= 3:
            j = joint_asymptote(curves, **kw)
            return j.E, _col(j.over_n.boot, 2), "joint asymptote: K-limit per N, then N-limit", records
        fits = {n: fit_points(pts, **kw) for n, pts in curves.items()}
        n = min(fits, key=lambda n: fits[n].E)
        return fits[n].E, _col(fits[n].boot, 2), f"K-limit of the ensembles at N = {n:.4g}B", records
    groups = run_points(records, "params", problems)
    pts = [p for g in groups.values() for p in g]
    if len({round(p.x, 9) for p in pts}) >= 3:
        fit = fit_points(pts, **kw)
        return fit.E, _col(fit.boot, 2), "asymptote E of the recipe's L(N)", records
    best = min(pts, key=lambda p: p.loss)
    return best.loss, None, f"best final loss, run {best.source} (fewer than 3 model sizes to fit)", records


def _col(boot, j):
    return None if boot is None else boot[:, j]


def reference_budget(args, recipe_records, baseline):
    if args.reference_tokens is not None:
        if args.reference_tokens <= 0:
            raise UsageError("--reference-tokens must be > 0")
        return args.reference_tokens / 1e9, "given with --reference-tokens"
    budgets = {r.train_tokens for r in recipe_records if r.train_tokens}
    if len(budgets) > 1:
        raise UsageError(
            f"the recipe runs differ in train_tokens ({', '.join(map(str, sorted(budgets)))}); pass --reference-tokens"
        )
    if budgets:
        return budgets.pop() / 1e9, "the recipe runs' train_tokens"
    return float(baseline.x.min()), "the baseline's smallest budget (none given)"


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    command = "python tools/fit_scaling.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    problems = []
    try:
        from megarecipe.analysis.report import check_out

        check_out(args.out)
        os.makedirs(args.out, exist_ok=True)
        if args.points:
            groups, x_name = read_table(args.points)
            fits = fit_groups(groups, args)
            paths = curves_report(args, fits, x_name, [], problems, command, f"Fit of {os.path.basename(args.points)}")
        elif args.over:
            records = read(args.runs, problems)
            fits = fit_groups(run_points(records, args.over, problems, args.group_by), args)
            paths = curves_report(args, fits, OVER[args.over][2], records, problems, command, f"Loss over {args.over}")
        elif args.joint:
            paths = joint(args, command, problems)
        else:
            paths = efficiency(args, command, problems)
    except (FitError, RunReadError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e.filename or args.out}: {e.strerror}", file=sys.stderr)
        return 2
    print(
        "wrote "
        + ", ".join(paths + sorted(os.path.join(args.out, f) for f in os.listdir(args.out) if f.endswith(".png")))
    )
    return 0


def joint(args, command, problems):
    from megarecipe.analysis import plots, report
    from megarecipe.analysis.fit import joint_asymptote

    records = read(args.runs, problems)
    curves = ensemble_curves(records, problems)
    j = joint_asymptote(curves, **fit_kw(args))
    for n, fit in j.per_n.items():
        print(f"N = {n:.4g}B: {fit.formula()}  ->  E_N = {fit.E:.4f}")
    ci = j.over_n.ci.get("E")
    print(f"joint: {j.over_n.formula()}  ->  E = {j.E:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""))
    plots.plot_joint(j, os.path.join(args.out, "joint.png"))
    stage1 = [{"N_billions": n, **f.to_dict()} for n, f in j.per_n.items()]
    data = {"mode": "joint", "E": j.E, "stage1": stage1, "stage2": j.over_n}
    return report.write(
        args.out,
        "Joint asymptote (ensembles, then model size)",
        command,
        records,
        problems,
        [report.joint_markdown(j)],
        ["joint.png"],
        data,
    )


def efficiency(args, command, problems):
    from megarecipe.analysis import plots, report
    from megarecipe.analysis.fit import data_efficiency, fit_points

    base_records = read(args.baseline, problems)
    groups = run_points(base_records, "tokens", problems)
    base = fit_points([p for g in groups.values() for p in g], **fit_kw(args))
    print(f"baseline: {base.formula()}  (D in billions of tokens)")
    loss, boot, how, recipe_records = recipe_loss(args, problems)
    ref, ref_how = reference_budget(args, recipe_records, base)
    eff = data_efficiency(base, loss, ref, recipe_boot=boot, level=args.level)
    ci = f" [{eff.ci[0]:.2f}, {eff.ci[1]:.2f}]" if eff.ci else ""
    print(f"recipe loss {loss:.4f} ({how}); reference {ref:.4g}B tokens -> data efficiency {eff.value:.2f}x{ci}")
    plots.plot_efficiency(eff, os.path.join(args.out, "efficiency.png"))
    sections = [
        report.efficiency_markdown(eff, how) + f"\nReference budget: {ref_how}.\n",
        report.fit_markdown("Baseline data law", base, OVER["tokens"][2]),
    ]
    data = {"mode": "data-efficiency", "recipe_loss_from": how, "reference_from": ref_how, "efficiency": eff}
    return report.write(
        args.out,
        "Data efficiency",
        command,
        base_records + recipe_records,
        problems,
        sections,
        ["efficiency.png"],
        data,
    )


if __name__ == "__main__":
    sys.exit(main())
