"""Ensembles of members that differ only by run.seed: train them in parallel, see where they stand, score the
logit-averaged ensemble for K = 1..n members.

  python tools/ensemble.py train configs/300m.yaml --members 5 --out ens/300m [--parallel 2] [--backend local|slurm]
                                 [--member-shift] [--processes 1] [key=value ...]
  python tools/ensemble.py status ens/300m
  python tools/ensemble.py eval ens/300m [--members 5] [--resident 2] [--processes 2]
  python tools/ensemble.py eval --runs runs/a runs/b --out ens/ab      # any finished runs, in the order given
  python tools/fit_scaling.py ens/300m --over members --out reports/ens-300m

train: member i is ENS/members/seed<i>, a resumable run with run.seed=i (init and data order; the training
subset is the same for every seed). Members run through the launcher, --parallel at a time; a failed or killed
member does not stop the others and is resumed by the next `train`. --member-shift applies the paper's member
recipe to the config's values: 2x the epochs, 0.5x the weight decay, the same LR.

eval: the mean of the first K members' logits, then cross-entropy over the held-out tokens of every run's
val/loss, for every K in one pass. --resident R keeps at most R members on a device (per process) and processes
the rest in turns over chunks of the data; --processes N runs N ranks (torchrun; gloo on CPU, nccl on GPU),
members dealt out to ranks. Writes ENS/tb (ensemble/val_loss at step K), ENS/ensemble.json, ENS/run.json and
ENS/loss_vs_members.png.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from megarecipe import atomic, ensembledir, rundir
from megarecipe.cli.common import Parser, fail, run
from megarecipe.rundir import RunDir
from megarecipe.system import check_device


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="ensemble.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train (or resume) the members")
    t.add_argument("config", help="YAML file or preset name")
    t.add_argument("overrides", nargs="*", help="key=value settings for every member")
    t.add_argument("--members", type=int, required=True)
    t.add_argument("--out", required=True, help="the ensemble directory (members go to OUT/members/seed<i>)")
    t.add_argument("--parallel", type=int, default=1, help="members training at once")
    t.add_argument("--backend", choices=("local", "slurm"), default="local")
    t.add_argument("--processes", type=int, default=1, help="processes per member")
    t.add_argument("--member-shift", action="store_true", help="2x epochs, 0.5x weight decay, same LR")
    t.add_argument("--retries", type=int, default=1, help="relaunches of a failed member within this invocation")
    s = sub.add_parser("status", help="each member: finished / running / failed (why) / not started")
    s.add_argument("out")
    e = sub.add_parser("eval", help="score the ensemble for K = 1..n")
    e.add_argument("out", nargs="?", help="the ensemble directory")
    e.add_argument("--runs", nargs="+", help="score these run dirs instead of OUT's members (write to --out)")
    e.add_argument("--out", dest="out_flag", help="where to write, with --runs")
    e.add_argument("--members", type=int, help="score the first K members (default: all)")
    e.add_argument("--resident", type=int, help="at most this many members on a device at once, per process")
    e.add_argument("--processes", type=int, default=1, help="ranks of a torchrun job")
    e.add_argument("--chunk-batches", type=int, default=16, help="held-out batches per chunk when members take turns")
    e.add_argument("--device", help="cpu, cuda (default: cuda when present)")
    e.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args, rest = _parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    if rest and args.command != "train":
        return fail(f"unexpected arguments {' '.join(rest)}; see `ensemble.py {args.command} --help`")
    if args.command == "train":
        args.overrides += rest
        return train(args)
    if args.command == "status":
        return status(args)
    return evaluate(args, sys.argv[1:] if argv is None else argv)


def train(args) -> int:
    from megarecipe.recipes import ensemble

    for name in ("members", "parallel", "processes"):
        if getattr(args, name) < 1:
            return fail(f"--{name}={getattr(args, name)} must be >= 1")
    if args.retries < 0:
        return fail(f"--retries={args.retries} must be >= 0")
    flags = [a for a in args.overrides if a.startswith("-") or "=" not in a]
    if flags:
        return fail(f"train: unknown argument {flags[0]!r}; pass CONFIG, options and key=value settings")

    def done(result):
        how = f"val/loss {result.val_loss:.4f}" if result.val_loss is not None else (result.error or "")
        print(
            f"{result.name}: {result.state}{' (already finished)' if result.reused else ''} {how}".rstrip(), flush=True
        )

    def members() -> int:
        states.extend(
            ensemble.train(
                args.config,
                args.overrides,
                args.out,
                args.members,
                parallel=args.parallel,
                backend=args.backend,
                processes=args.processes,
                member_shift=args.member_shift,
                retries=args.retries,
                on_done=done,
            )
        )
        return 0

    states = []
    try:
        code = run(members)
    except (KeyboardInterrupt, SystemExit) as e:  # SIGTERM: the launcher has stopped the members
        print(f"stopped; the same command resumes the members (in {args.out})", file=sys.stderr)
        return getattr(e, "code", None) or 130
    if code:
        return code
    print(ensemble.format_status(states))
    finished = sum(s.state == rundir.FINISHED for s in states)
    if finished < len(states):
        print(
            f"{len(states) - finished} of {len(states)} members are not finished; run the same command again to "
            f"resume them",
            file=sys.stderr,
        )
        return 1
    more = len(ensemble.status(args.out)) > args.members  # members of an earlier, larger call are there too
    out = shlex.quote(os.path.join(".", args.out) if args.out.startswith("-") else args.out)  # a command to paste
    print(
        f"all {finished} members finished; next: python tools/ensemble.py eval {out}"
        + (f" --members {args.members}" if more else "")
    )
    return 0


def status(args) -> int:
    from megarecipe.recipes import ensemble

    def show() -> int:
        print(ensemble.format_status(ensemble.status(args.out)))
        return 0

    return run(show)


def evaluate(args, argv: list[str]) -> int:
    if args.runs and not args.out_flag and not args.out:
        return fail("--out: missing; with --runs, say where to write the ensemble's results (--out DIR)")
    if not args.runs and not args.out:
        return fail("eval: no ensemble directory; pass ENS (made by `ensemble.py train`) or --runs RUN... --out DIR")
    for name in ("members", "resident", "processes", "chunk_batches"):
        value = getattr(args, name)
        if value is not None and value < 1:
            return fail(f"--{name.replace('_', '-')}={value} must be >= 1")
    out = args.out_flag or args.out
    read = []
    code = run(lambda: _read_members(args, out, read), where=out)
    if code:
        return code
    members = read[0]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if args.processes > 1 and world == 1:
        import torch

        gpus = torch.cuda.device_count() if args.device != "cpu" else 0
        if 0 < gpus < args.processes:
            return fail(
                f"--processes={args.processes}: only {gpus} GPUs here (one rank a GPU); pass --processes "
                f"{gpus} and --resident to fit, or --device cpu"
            )
        return _spawn(args.processes, argv)
    return run(lambda: _score_and_write(members, args, out, world), where=out, ranked=True)


def _read_members(args, out: str, read: list) -> int:
    """The members to score, checked, into `read`; and whether OUT can take the results, before the scoring."""
    from megarecipe.analysis.heldout import EnsembleError, read_members
    from megarecipe.recipes.ensemble import member_dirs

    check_device(args.device)
    run_dirs = list(args.runs) if args.runs else member_dirs(out, args.members)
    if args.members and args.runs:
        if len(run_dirs) < args.members:
            raise EnsembleError(
                f"--members {args.members}: only {len(run_dirs)} runs given; pass more runs or "
                f"--members {len(run_dirs)}"
            )
        run_dirs = run_dirs[: args.members]
    twice = [d for i, d in enumerate(run_dirs) if os.path.realpath(d) in map(os.path.realpath, run_dirs[:i])]
    if twice:
        raise EnsembleError(
            f"--runs: {twice[0]} is given twice; an ensemble of a run with itself is that run, so list each member once"
        )
    read.append(read_members(run_dirs))
    RunDir(out).check_kind("ensemble")
    if int(os.environ.get("RANK", "0")) == 0:
        atomic.check_writable(out)  # before the scoring, not after it
    return 0


def _score_and_write(members, args, out: str, world: int) -> int:
    """Score, and on rank 0 write the results (an OSError there: the disk filled while they were written)."""
    from megarecipe.analysis.heldout import format_losses, write_result

    rank = int(os.environ.get("RANK", "0"))
    losses = _score(members, args, world)
    if rank == 0:
        write_result(out, members, losses)
        print(format_losses(losses, ensembledir.read(out)["member_val_loss"]))
        print(
            f"wrote {os.path.join(out, rundir.TB)}, {ensembledir.ENSEMBLE_JSON}, {rundir.RUN_JSON} and "
            f"{ensembledir.PLOT} in {out}"
        )
    return 0


def _score(members, args, world: int) -> list[float]:
    from megarecipe.analysis.heldout import score_members

    if world == 1:
        return score_members(members, args.device, args.resident, args.chunk_batches, not args.no_progress)
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available() and args.device != "cpu"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
        return score_members(members, device, args.resident, args.chunk_batches, not args.no_progress)
    finally:
        dist.destroy_process_group()


def _spawn(processes: int, argv: list[str]) -> int:
    """Run this same evaluation as a job of `processes` ranks: warm when it may, else a torchrun job."""
    from megarecipe.launch import direct  # a backend: multiprocessing, sockets (see megarecipe/__init__)

    return direct.run(_without_processes(argv), processes, module="megarecipe.cli.ensemble", quiet_stop=True)


def _without_processes(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--processes":
            skip = True
        elif not a.startswith("--processes="):
            out.append(a)
    return out


if __name__ == "__main__":
    sys.exit(main())
