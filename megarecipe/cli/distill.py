"""Distillation: a finished run or an ensemble teaches a smaller student by its logits.

  python tools/distill.py train --teacher runs/ens-300m --student configs/150m.yaml --out runs/kd-150m \\
      [--alpha 0.9] [--temperature 1.0] [--processes 8] [key=value ...]
  python tools/distill.py cache --teacher runs/ens-300m --student configs/150m.yaml --out cache/ens-300m --k 64
  python tools/distill.py train --teacher cache/ens-300m --student configs/150m.yaml --out runs/kd-150m-top64
  python tools/distill.py report runs/kd-150m --single runs/150m [--teacher runs/ens-300m]
  python tools/distill.py sample --teacher runs/ens-300m --tokens 200M --out data/ens300m-synth \\
      [--temperature 1.0] [--top-p 0.9] [--seed 0] [--batch 8]
  torchrun --nproc_per_node 8 -m megarecipe.cli.distill sample ...          # the shards dealt out to 8 ranks
  python -m megarecipe.cli.train configs/300m.yaml "data.mix=[data/dclm:0.1,data/ens300m-synth:0.9]"

`train` runs the trainer (`python -m megarecipe.cli.train`, or `deepspeed --num_gpus N --module ...` for N > 1
processes) with distill.teacher/alpha/temperature set: the loss per token is
alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy, with val/loss the plain held-out loss.
Add run.resume=true to continue a stopped run. `cache` writes the teacher's k most likely tokens and the mass of
the rest at every training position of the student's budget (memory-mapped); training from it runs no teacher
(k = the vocabulary gives the live teacher's loss). `report` prints the fraction of the teacher's gain over the
single run that the student keeps: (L_single - L_student) / (L_single - L_teacher).
`sample` (sequence-level distillation) draws sequences of the teacher's seq_len, each from EOS, into a data dir
with the teacher's tokenizer and no validation split; a killed run continues from its finished shards. Train on it
mixed with real text through data.mix (the first dir is the real one: its tokens are the budget and val/loss).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from megarecipe.analysis.distill import retained
from megarecipe.cli.common import Parser, fail, run
from megarecipe.errors import UserError
from megarecipe.system import check_device, has_cuda, stop_with_launcher


def main(argv: list[str] | None = None) -> int:
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a student with a teacher")
    t.add_argument("--teacher", required=True, help="a finished run (with export/) or an ensemble dir")
    t.add_argument("--student", required=True, help="the student's config: a YAML file or a preset name")
    t.add_argument("--out", required=True, help="the student's run directory")
    t.add_argument("--alpha", type=float, default=None, help="weight of the teacher's term (default 0.9)")
    t.add_argument("--temperature", type=float, default=None, help="softmax temperature T (default 1.0)")
    t.add_argument("--processes", type=int, default=1, help="processes on this machine (GPUs, or CPU processes)")
    t.add_argument("--dry-run", action="store_true", help="check everything and print the command, run nothing")
    t.add_argument("overrides", nargs="*", help="key=value settings for the student")
    c = sub.add_parser("cache", help="precompute the teacher's top-k over the student's training positions")
    c.add_argument("--teacher", required=True, help="a finished run (with export/) or an ensemble dir")
    c.add_argument("--student", required=True, help="the student's config (its data dir, budget and seq_len)")
    c.add_argument("--out", required=True, help="the cache directory")
    c.add_argument("--k", type=int, default=64, help="tokens kept per position (default 64)")
    c.add_argument("--temperature", type=float, default=None, help="default: the student config's (1.0)")
    c.add_argument("--batch-size", type=int, default=8)
    c.add_argument("--device", default=None, help="default: cuda when there is one")
    c.add_argument("overrides", nargs="*", help="key=value settings of the student")
    r = sub.add_parser("report", help="the fraction of the teacher's gain the student retains")
    r.add_argument("student", help="the distilled student's run directory")
    r.add_argument("--single", required=True, help="a plain run of the student's shape (no teacher)")
    r.add_argument("--teacher", default=None, help="default: the teacher the student's run.json names")
    s = sub.add_parser("sample", help="draw sequences from the teacher into a data dir")
    s.add_argument("--teacher", required=True, help="a finished run (with export/) or an ensemble dir")
    s.add_argument("--tokens", required=True, help="training tokens to draw, e.g. 200M, 1.5B or 65536")
    s.add_argument("--out", required=True, help="the new data dir")
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--top-p", type=float, default=None, help="sample from the nucleus of this mass (default: all)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch", type=int, default=8, help="sequences generated together")
    s.add_argument("--shard-sequences", type=int, default=256, help="sequences per resumable shard")
    s.add_argument("--device", default=None, help="default: cuda when there is one")
    args, rest = p.parse_known_args(argv)
    if rest:  # key=value settings after an option (argparse takes one run of positionals)
        if args.command not in ("train", "cache") or any(a.startswith("-") or "=" not in a for a in rest):
            p.error(f"unrecognized arguments: {' '.join(rest)}")
        args.overrides += rest
    return {"train": _train, "cache": _cache, "report": _report, "sample": _sample}[args.command](args)


def _train(args) -> int:
    from megarecipe.config import ConfigError, load_config, override
    from megarecipe.preflight import check_run

    owned = {
        "run.dir": ("--out", args.out),
        "distill.teacher": ("--teacher", args.teacher),
        "distill.alpha": ("--alpha", args.alpha),
        "distill.temperature": ("--temperature", args.temperature),
    }
    for item in args.overrides:  # the flag's value would silently win over another one
        key, _, value = item.partition("=")
        flag, given = owned.get(key, (None, None))
        if given is not None and value != str(given) and os.path.normpath(value) != os.path.normpath(str(given)):
            return fail(f"{item}: {key} is set by {flag} {given}; give it once")
    overrides = [*args.overrides, override("run.dir", args.out), override("distill.teacher", args.teacher)]
    overrides += [f"distill.alpha={args.alpha}"] if args.alpha is not None else []
    overrides += [f"distill.temperature={args.temperature}"] if args.temperature is not None else []

    def check() -> int:
        if args.processes < 1:
            raise ConfigError(f"--processes={args.processes} must be >= 1")
        check_run(load_config(args.student, overrides), world_size=args.processes)  # errors before spawning
        return 0

    code = run(check, ranked=True)  # the trainer's own ranks report through rank_errors alike
    if code:
        return code
    from megarecipe.launch import direct  # a backend: multiprocessing, sockets (see megarecipe/__init__)

    trainer_args = [args.student, *overrides]
    if args.dry_run:  # what a cold start runs; a warm one forks the same ranks from a preloaded server
        print(shlex.join(direct.cold_command(trainer_args, args.processes)))
        return 0
    return direct.run(trainer_args, processes=args.processes)


def _cache(args) -> int:
    return run(lambda: _build_cache(args), where=args.out)  # an OSError: a read-only --out, or a full disk


def _build_cache(args) -> int:
    from megarecipe.config import load_config
    from megarecipe.distill.cache import build

    cfg = load_config(args.student, args.overrides)
    t = args.temperature if args.temperature is not None else cfg.distill.temperature
    if not t > 0 or args.batch_size < 1:
        raise UserError(f"--temperature {t} must be > 0 and --batch-size {args.batch_size} >= 1")
    device = check_device(args.device) or ("cuda" if has_cuda() else "cpu")
    info = build(
        args.teacher,
        cfg.data.dir,
        cfg.model.seq_len,
        cfg.data.train_tokens,
        args.k,
        t,
        args.out,
        device=device,
        batch_size=args.batch_size,
        bf16=device.startswith("cuda"),
    )
    print(
        f"wrote {args.out}: top-{info['k']} of {info['vocab_size']} at {info['num_sequences']} x {info['seq_len']} "
        f"positions, T = {info['temperature']}; train with --teacher {args.out}"
    )
    return 0


def _report(args) -> int:
    return run(lambda: _print_retained(args))


def _print_retained(args) -> int:

    r = retained(args.student, args.single, args.teacher)
    width = max(len(r.teacher), len(r.student), len(r.single))
    print(f"L_teacher  {r.teacher:<{width}}  {r.teacher_loss:.4f}")
    print(f"L_student  {r.student:<{width}}  {r.student_loss:.4f}")
    print(f"L_single   {r.single:<{width}}  {r.single_loss:.4f}")
    print(f"retained = (L_single - L_student) / (L_single - L_teacher) = {r.fraction:.3f}")
    return 0


def _process_group(device: str):
    """`torchrun -m megarecipe.cli.distill sample ...`: the ranks share the shards; returns their barrier."""
    import torch.distributed as dist

    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return dist.barrier


def _leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _sample(args) -> int:
    stop_with_launcher()  # under a launcher or the recipe tool (MEGARECIPE_OWNER_PID): not left drawing after kill -9
    # every rank reads the same arguments and files: rank 0 speaks for its node, as before any process group
    return run(lambda: _draw(args), ranked=True)


def _draw(args) -> int:
    from megarecipe.config.numbers import parse_count
    from megarecipe.distill.sample import sample, stderr_log

    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    try:
        device = check_device(args.device) or (f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if has_cuda() else "cpu")
        tokens = parse_count(args.tokens, "--tokens")
        barrier = _process_group(device) if world > 1 else None
        meta = sample(
            args.teacher,
            args.out,
            tokens,
            args.temperature,
            args.top_p,
            args.seed,
            args.batch,
            args.shard_sequences,
            device=device,
            bf16=device.startswith("cuda"),
            log=stderr_log,
            rank=rank,
            world=world,
            barrier=barrier,
        )
    finally:
        _leave_process_group()
    if rank != 0:
        return 0
    print(
        f"wrote {args.out}: {meta.train_tokens} tokens in {meta.train_documents} shard(s), "
        f"T = {args.temperature}, top-p = {args.top_p}, seed {args.seed}; train with "
        f"data.mix=[REAL_DATA_DIR:0.1,{args.out}:0.9]"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
