"""Scaling-law fits L(x) = A / x^alpha + E from run directories' TensorBoard events (or a table).

  python tools/fit_scaling.py runs/reg-* --over params --out reports/reg          # L(N), N in billions
  python tools/fit_scaling.py runs/ens-300m-* --over members --out reports/ens    # L(K) of ensembles
  python tools/fit_scaling.py --joint runs/ens-* --out reports/joint              # K-limit per N, then N-limit
  python tools/fit_scaling.py --data-efficiency --baseline runs/std-* --recipe runs/joint-* --out reports/eff
  python tools/fit_scaling.py --points table.csv --out reports/paper             # rows x,loss[,group]

Where several runs share x (a sweep) the best one is used. Writes OUT/report.md, fits.json, runs.csv, *.png.
"""

import argparse
import os
import shlex
import sys

from megarecipe.analysis import scaling
from megarecipe.analysis.report import check_out
from megarecipe.cli.common import Parser, run

OVER = scaling.OVER


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


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    command = "python tools/fit_scaling.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    return run(lambda: _fit(args, command), where=args.out)


def _fit(args, command: str) -> int:

    check_out(args.out)
    os.makedirs(args.out, exist_ok=True)
    problems = scaling.Problems(note=lambda line: print(line, file=sys.stderr))
    kw, out = fit_kw(args), args.out
    if args.points:
        paths = scaling.table_report(out, args.points, kw, command, log=print)
    elif args.over:
        paths = scaling.over_report(out, args.runs, args.over, args.group_by, kw, command, problems, log=print)
    elif args.joint:
        paths = scaling.joint_report(out, args.runs, kw, command, problems, log=print)
    else:
        paths = scaling.efficiency_report(
            out,
            args.baseline,
            args.recipe,
            args.recipe_loss,
            args.reference_tokens,
            args.level,
            kw,
            command,
            problems,
            log=print,
        )
    pngs = sorted(os.path.join(out, f) for f in os.listdir(out) if f.endswith(".png"))
    print("wrote " + ", ".join(paths + pngs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
