"""Locally optimal hyperparameters by coordinate descent over training runs, with a certificate.

  python tools/tune.py configs/150m.yaml --out sweeps/150m [--parallel 4] [--backend local|slurm] [key=value ...]
  python tools/tune.py configs/150m.yaml --standard --out sweeps/150m-std        # weight decay fixed at 0.1
  python tools/tune.py --ladder configs/150m.yaml,configs/300m.yaml --tokens 100M,200M --out sweeps/ladder
  python tools/tune.py --status sweeps/150m

Grids (the paper's unless given): --epochs 1,2,4,...,64  --lr 1e-4,3e-4,1e-3,3e-3,1e-2,3e-2
--wd 0,0.1,0.2,0.4,...,12.8. Each round trains the centre and its neighbours one grid step either way (up to 6)
at once, moves to the best, and stops when the centre beats every neighbour; the centre is then re-run with
the next seed. Writes OUT/certificate.json and certificate.md (a ladder: one sweep per size and budget, then
OUT/report.md with the scaling fits). Killed and started again with the same command, it trains nothing twice.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import signal
import sys

from megarecipe.cli.common import Parser, fail, run
from megarecipe.launch import number
from megarecipe.recipes.status import StatusError, report
from megarecipe.recipes.sweep import Launching, Sweep, paper_grid

BACKENDS = ("local", "slurm")


def numbers(kind, least: float = 0.0, above: bool = False):
    """A grid: finite numbers >= least (> least when `above`), e.g. epochs >= 1, LR > 0, weight decay >= 0."""

    def parse(text: str) -> list:
        try:
            values = sorted({kind(v) for v in text.split(",") if v.strip()})
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
        if not values:
            raise argparse.ArgumentTypeError("the list is empty")
        bad = [v for v in values if not math.isfinite(v) or v < least or (above and v == least)]
        if bad:
            raise argparse.ArgumentTypeError(
                f"{bad[0]} is out of range (each must be {'>' if above else '>='} {least:g})"
            )

        for a, b in zip(values, values[1:], strict=False):  # names spell 6 digits: one run dir for both
            if number(a) == number(b):
                raise argparse.ArgumentTypeError(
                    f"{a!r} and {b!r} both read {number(a)} in run names, so they "
                    f"would share a run dir; give values that differ in 6 digits"
                )
        return values

    return parse


def parse(argv):
    ap = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("args", nargs="*", metavar="CONFIG [key=value ...]", help="config (YAML or preset) and overrides")
    ap.add_argument("--out", help="sweep directory")
    ap.add_argument("--status", metavar="SWEEP", help="print what ran, what is running and what is left, then exit")
    ap.add_argument("--standard", action="store_true", help="the standard recipe: weight decay fixed at 0.1")
    ap.add_argument("--ladder", metavar="A.yaml,B.yaml", help="model sizes in order, each from the previous optimum")
    ap.add_argument("--tokens", metavar="100M,200M", help="token budgets D (data.train_tokens), each its own search")
    ap.add_argument("--epochs", type=numbers(int, 1), help="epochs grid (default 1,2,4,...,64)")
    ap.add_argument("--lr", type=numbers(float, 0, above=True), help="learning-rate grid (default 1e-4,3e-4,...,3e-2)")
    ap.add_argument("--wd", type=numbers(float), help="weight-decay grid (default 0,0.1,0.2,...,12.8)")
    ap.add_argument(
        "--seed-early",
        action="store_true",
        help="re-run each round's centre with the next seed alongside its neighbours: one run more per "
        "move, one wave of runs less at the end",
    )
    ap.add_argument("--parallel", type=int, default=1, help="runs at once (default 1)")
    ap.add_argument("--processes", type=int, default=1, help="ranks per run (default 1)")
    ap.add_argument("--retries", type=int, default=1, help="retries of a failed run, resuming (default 1)")
    ap.add_argument(
        "--retry-failed",
        action="store_true",
        help="try runs an earlier call marked failed again (default: read back as failed)",
    )
    ap.add_argument("--backend", choices=BACKENDS, default="local", help="local pool or Slurm job arrays")
    ap.add_argument("--bootstrap", type=int, default=100, help="resamples for the fits' intervals (0: none)")
    ap.add_argument("--gpus-per-node", type=int, default=8, help="Slurm: GPUs per node (default 8)")
    ap.add_argument("--slurm-args", default="", help="extra sbatch arguments, e.g. '--partition=gpu --time=4:00:00'")
    args = ap.parse_intermixed_args(argv)
    if args.status:
        return args
    if not args.out:
        ap.error("--out: missing; give the sweep directory, e.g. --out sweeps/150m")
    paths = [a for a in args.args if "=" not in a]
    args.overrides = [a for a in args.args if "=" in a]
    if args.ladder:
        if paths:
            ap.error(f"{paths[0]}: give the configs with --ladder only")
        args.configs = [c for c in args.ladder.split(",") if c]
    elif len(paths) != 1:
        ap.error("give one config (a YAML file or a preset name), or --ladder A.yaml,B.yaml")
    else:
        args.configs = paths
    if args.standard and args.wd:
        ap.error("--wd: the standard recipe fixes weight decay at 0.1; drop --wd or --standard")
    for name in ("parallel", "processes", "gpus_per_node"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')}={getattr(args, name)} must be >= 1")
    if args.retries < 0:
        ap.error(f"--retries={args.retries} must be >= 0")
    for key in ("optim.lr", "optim.weight_decay", "train.epochs", "run.dir", "run.seed", "run.resume"):
        if any(o.split("=", 1)[0] == key for o in args.overrides):
            ap.error(f"{key}: set by the search; use --lr/--wd/--epochs for grids, or the config for the seed")
    return args


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.status:
        try:
            print(report(args.status), end="")
        except StatusError as e:
            return fail(f"--status: {e}")
        return 0
    from megarecipe.recipes import ladder

    command = "python tools/tune.py " + shlex.join(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)  # unwinds the pool: its runs checkpoint and stop

    def search() -> int:
        grid = paper_grid(args.standard, args.epochs, args.lr, args.wd)
        how = Launching(
            args.backend,
            args.parallel,
            args.retries,
            args.processes,
            shlex.split(args.slurm_args),
            args.retry_failed,
            args.gpus_per_node,
        )
        budgets = [ladder.parse_tokens(t) for t in args.tokens.split(",")] if args.tokens else [None]
        if args.ladder or args.tokens:
            certs = ladder.run(
                args.configs,
                budgets,
                args.out,
                args.overrides,
                grid,
                how,
                command=command,
                n_boot=args.bootstrap,
                seed_early=args.seed_early,
            )
            print(f"report: {os.path.join(args.out, 'report.md')}")
            return 0 if all(certs.values()) else 1
        Sweep(args.configs[0], args.out, args.overrides, grid, how, seed_early=args.seed_early).run()
        return 0

    try:
        return run(search)
    except (KeyboardInterrupt, SystemExit) as e:
        print(f"stopped; the same command resumes the search (runs in {args.out})", file=sys.stderr)
        return getattr(e, "code", None) or 130
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
