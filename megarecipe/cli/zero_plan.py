"""Plan which ZeRO / TP / PP / micro-batch / recomputation layout fits, measure the candidates, write the winner.

  python tools/zero_plan.py configs/1.4b.yaml model.vocab_size=128256 --nodes 2 --gpus-per-node 8 --gpu-memory 80GB
  python tools/zero_plan.py configs/tiny.yaml --processes 2 --measure --out plans/tiny
  python tools/zero_plan.py configs/300m.yaml model.vocab_size=32000 --gpus-per-node 8 --gpu-memory 80GB \\
      --write ds_configs/300m-best.json

Memory per device is split into parameters, gradients, optimizer states (fp32 master copies included),
activations (with and without recomputation) and buffers; layouts the trainer refuses are listed with the
reason and never proposed. --measure trains each fitting candidate for --steps steps through
launchers/local.sh and records tokens/s, step time and peak memory. --write saves the winner's ds_config
(ZeRO settings only) and prints the overrides that select it.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import sys
import tempfile
from typing import NamedTuple

from megarecipe import atomic
from megarecipe.cli.common import Parser, run
from megarecipe.config import ConfigError, load_config, resolve_layout
from megarecipe.plan.candidates import (
    RECOMPUTE,
    ZERO_VARIANTS,
    check_depth,
    ds_json,
    enumerate_candidates,
    planned_vocab,
    write_ds_json,
)
from megarecipe.plan.comm import default_machine
from megarecipe.plan.measure import run_candidate
from megarecipe.plan.memory import ZeroSetting, fused_attention, rank_model_states
from megarecipe.plan.rank import assess, rank
from megarecipe.plan.report import refused_summary, table
from megarecipe.preflight import check_run


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None


def _size(text: str) -> float:
    match = re.fullmatch(r"\s*([0-9.]+)\s*(GB|GiB|G|MB|MiB|M)?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; write e.g. 80GB or 16GiB")
    unit = (match.group(2) or "GB").lower()
    scale = {"gb": 1e9, "g": 1e9, "gib": 2**30, "mb": 1e6, "m": 1e6, "mib": 2**20}[unit]
    return float(match.group(1)) * scale


def parse(argv):
    ap = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_config(help="a YAML run config")
    where = ap.add_argument_group("the machine")
    where.add_argument("--nodes", type=int, default=1)
    where.add_argument("--gpus-per-node", type=int, help="plan for GPUs (bf16 unless train.precision says fp32)")
    where.add_argument("--gpu-memory", type=_size, help="memory per GPU, e.g. 80GB")
    where.add_argument("--processes", type=int, help="plan for N CPU processes on this machine (fp32)")
    where.add_argument("--memory", type=_size, help="memory per CPU process (default: this machine's RAM / N)")
    where.add_argument("--margin", type=float, default=0.10, help="head-room fraction a fit must leave (0.10)")
    where.add_argument("--peak-tflops", type=float, help="per device at the precision in use (GPU: 989)")
    where.add_argument("--efficiency", type=float, default=0.4, help="achieved fraction of peak (0.4)")
    where.add_argument("--intra-gbs", type=float, help="GB/s per device inside a node (GPU: 150)")
    where.add_argument("--inter-gbs", type=float, help="GB/s per device across nodes (GPU: 25)")
    pick = ap.add_argument_group("which candidates (default: all)")
    pick.add_argument("--zero", help="comma list of ZeRO variants: zero0,zero1,zero2,zero2-offload,zero3,...")
    pick.add_argument("--tp", type=_ints)
    pick.add_argument("--pp", type=_ints)
    pick.add_argument("--micro-batch", type=_ints)
    pick.add_argument("--recompute", help="comma list of none,selective,full")
    out = ap.add_argument_group("output")
    out.add_argument("--top", type=int, default=20, help="rows of the table (20)")
    out.add_argument("--json", help="write every candidate with its planned (and measured) figures")
    out.add_argument("--measure", action="store_true", help="train each fitting candidate briefly")
    out.add_argument("--max-measure", type=int, default=8, help="measure at most this many, best planned first")
    out.add_argument("--steps", type=int, default=3, help="steps per measured candidate (3)")
    out.add_argument("--out", help="scratch dir for --measure (run dirs, ds_configs, plan.json)")
    out.add_argument("--write", help="write the winner's ds_config JSON here and print its overrides")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    return run(lambda: _run(args))


def _check_numbers(args) -> None:
    """Counts >= 1, rates and sizes > 0, margin >= 0, efficiency in (0, 1]: a zero divides, a negative one ranks
    backwards or makes every layout fit."""
    checks = [
        ("--nodes", args.nodes, args.nodes >= 1),
        ("--top", args.top, args.top >= 1),
        ("--steps", args.steps, args.steps >= 1),
        ("--max-measure", args.max_measure, args.max_measure >= 1),
        ("--margin", args.margin, args.margin >= 0),
        ("--efficiency", args.efficiency, 0 < args.efficiency <= 1),
    ]
    for name in ("gpus_per_node", "processes", "peak_tflops", "intra_gbs", "inter_gbs", "gpu_memory", "memory"):
        value = getattr(args, name)
        if value is not None:
            checks.append((f"--{name.replace('_', '-')}", value, value > 0))
    for name in ("tp", "pp", "micro_batch"):
        for value in getattr(args, name) or []:
            checks.append((f"--{name.replace('_', '-')}", value, value >= 1))
    for flag, value, ok in checks:
        if not ok:
            raise ConfigError(
                f"{flag} {value:g}: out of range (counts >= 1, sizes and rates > 0, margin >= 0, 0 < efficiency <= 1)"
            )


class Target(NamedTuple):
    world: int  # processes
    per_node: int  # devices per node
    budget: float  # bytes of memory per device
    gpu: bool


def _target(args) -> Target:
    """What to plan for, from the flags."""
    _check_numbers(args)
    if args.processes and args.gpus_per_node:
        raise ConfigError("--processes and --gpus-per-node: give one (CPU processes here, or GPUs)")
    if args.gpus_per_node:
        if not args.gpu_memory:
            raise ConfigError("--gpu-memory: needed with --gpus-per-node; give e.g. --gpu-memory 80GB")
        return Target(args.nodes * args.gpus_per_node, args.gpus_per_node, args.gpu_memory, True)
    if args.processes:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return Target(args.processes, args.processes, args.memory or ram / args.processes, False)
    raise ConfigError(
        "--gpus-per-node or --processes: say what to plan for, e.g. --gpus-per-node 8 "
        "--gpu-memory 80GB, or --processes 2"
    )


def _run(args) -> int:

    target = _target(args)
    world, gpu = target.world, target.gpu
    zeros, recomputes = _choices(args, gpu)
    cfg, vocab = _config(args, world, gpu)
    hw = default_machine(gpu, target.per_node, args.efficiency, args.peak_tflops, args.intra_gbs, args.inter_gbs)
    candidates = _plan(args, cfg, vocab, target, hw, zeros, recomputes)
    ranked = rank(candidates)
    _print_header(args, cfg, vocab, target, candidates, ranked)
    if args.measure:
        _measure(args, cfg, ranked, world, cfg.train.precision == "bf16")
        ranked = rank(candidates)
    _print_table(args, candidates, ranked)
    winner = next((c for c in ranked if c.fits and not (c.measured or {}).get("error")), None)
    if winner is None:
        print("no candidate fits: add devices, lower train.micro_batch_size, or allow offload", file=sys.stderr)
        return 1
    if args.write:
        _write_winner(args.write, winner, cfg, world, gpu)
    return 0


def _choices(args, gpu: bool) -> tuple[list[str] | None, list[str] | None]:
    """The --zero and --recompute lists (None: all), and what --measure needs."""
    zeros = args.zero.split(",") if args.zero else None
    for z in zeros or []:
        if z not in ZERO_VARIANTS:
            raise ConfigError(f"--zero: unknown variant {z!r}; use some of {', '.join(ZERO_VARIANTS)}")
    recomputes = args.recompute.split(",") if args.recompute else None
    for r in recomputes or []:
        if r not in RECOMPUTE:
            raise ConfigError(f"--recompute: unknown value {r!r}; use some of {', '.join(RECOMPUTE)}")
    if args.measure and not args.out:
        raise ConfigError("--measure: needs --out DIR for the scratch runs")
    if args.measure and gpu and args.nodes > 1:
        raise ConfigError("--measure: runs on this machine only; use --nodes 1")
    return zeros, recomputes


def _config(args, world: int, gpu: bool):
    """The config with its overrides and its precision for the target, checked for it; and the vocabulary."""
    cfg = load_config(args.config, args.overrides)
    check_depth(cfg.model)
    base = copy.deepcopy(cfg)  # the settings no candidate changes must be sound (and the data there, to measure)
    base.parallel.tp, base.parallel.pp, base.parallel.ds_config, base.train.micro_batch_size = 1, 1, "zero1", 1
    base.train.precision = "fp32"
    (check_run if args.measure else resolve_layout)(base, world_size=world, cuda=gpu or None)  # for the target
    vocab = planned_vocab(cfg)
    if cfg.train.precision == "auto":
        cfg.train.precision = "bf16" if gpu else "fp32"
    return cfg, vocab


def _plan(args, cfg, vocab: int, target: Target, hw, zeros, recomputes):
    """Every candidate layout, assessed (memory, fit, step time) for the target."""
    world, gpu = target.world, target.gpu
    with tempfile.TemporaryDirectory() as ds_dir:
        candidates = enumerate_candidates(
            cfg,
            vocab,
            world,
            target.per_node,
            ds_dir,
            zeros,
            args.tp,
            args.pp,
            args.micro_batch,
            recomputes,
            cuda=gpu or None,
        )
        assess(candidates, cfg, world, target.budget, args.margin, hw, cfg.train.precision == "bf16", gpu)
    return candidates


def _print_header(args, cfg, vocab: int, target: Target, candidates, ranked) -> None:

    budget = target.budget
    where = (
        f"{args.nodes} node(s) x {target.per_node} GPU(s), {budget / 1e9:.0f} GB each"
        if target.gpu
        else f"{target.world} CPU process(es), {budget / 2**30:.1f} GiB each"
    )
    attention = "fused" if fused_attention(cfg.model, target.gpu) else "unfused"
    print(
        f"{args.config}: {len(candidates)} candidates for {where}, {cfg.train.precision}, vocab {vocab}, "
        f"{attention} attention (model.kernels={cfg.model.kernels}), margin {args.margin:.0%}; "
        f"{sum(1 for c in ranked if c.fits)} fit"
    )


def _print_table(args, candidates, ranked) -> None:
    """The table, the refused layouts' summary, and the JSON files asked for."""
    print(table(ranked, args.top))
    summary = refused_summary(candidates)
    if summary:
        print(summary)
    if args.json:
        _write_json(args.json, candidates, args)
    if args.measure:
        _write_json(os.path.join(args.out, "plan.json"), candidates, args)


def _measure(args, cfg, ranked, world, bf16) -> None:

    fitting = [c for c in ranked if c.fits][: args.max_measure]
    for i, c in enumerate(fitting, 1):
        print(f"measuring {i}/{len(fitting)}: {c.name} ({args.steps} steps)", flush=True)
        c.measured = run_candidate(c, args.config, args.overrides, world, args.out, args.steps)
        ranks = c.measured.get("ranks")
        if ranks:
            z = ZeroSetting.from_json(ds_json(c.zero))
            planned = [rank_model_states(cfg.model, c.vocab, z, c.tp, c.pp, c.dp, bf16, r) for r in range(len(ranks))]
            c.measured["planned_ranks"] = planned
            c.measured["model_states_match"] = all(
                all(p[k] == r[k] for k in ("params", "grads", "optimizer")) for p, r in zip(planned, ranks, strict=True)
            )


def _write_json(path: str, candidates, args) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    doc = {"config": args.config, "overrides": args.overrides, "candidates": [c.as_dict() for c in candidates]}
    atomic.write_json(path, doc)
    print(f"wrote {path}")


def _write_winner(path: str, winner, cfg, world: int, gpu: bool) -> None:

    write_ds_json(winner.zero, path)
    overrides = winner.overrides(path)
    check = load_config(None, [])
    check.model, check.train, check.optim = copy.deepcopy(cfg.model), cfg.train, cfg.optim
    check.model.vocab_size = winner.vocab
    for item in overrides:
        key, value = item.split("=", 1)
        section, name = key.split(".")
        setattr(getattr(check, section), name, type(getattr(getattr(check, section), name))(value))
    resolve_layout(check, world_size=world, cuda=gpu or None)
    print(f"wrote {path} ({winner.name}); train with:\n  " + " ".join(overrides))


if __name__ == "__main__":
    sys.exit(main())
