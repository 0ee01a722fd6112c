"""Step time of distillation with a live teacher (1 and 3 members) against plain training of the same student,
as ratios, in one run.

    python benchmarks/distill_bench.py              # writes the table to stdout; --write adds it to RESULTS.md

Each case is a real training run (the trainer's loop, its perf/tokens_per_sec, one process). The teachers are
exports with random weights of a model twice the student's depth: their quality does not change the time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from bench_common import add_shape_args, ensure_data, publish, shape_overrides, trainer_env

from megarecipe.system import free_port

REPO = Path(__file__).resolve().parent.parent


def make_teachers(a, data_dir: str, work: str, n: int) -> str:
    """An ensemble dir of n random-weight exports; returns its path."""
    from megarecipe.config import load_config
    from megarecipe.data.meta import load_meta
    from megarecipe.model.export import write_export
    from megarecipe.model.reference import Llama
    from megarecipe.preflight import check_run

    cfg = load_config(
        "configs/tiny.yaml",
        [
            *shape_overrides(a, a.teacher_layers),
            f"data.dir={data_dir}",
            "data.train_tokens=null",
            "data.val_tokens=null",
        ],
    )
    vocab = check_run(cfg, world_size=1).vocab_size
    members = []
    for i in range(n):
        torch.manual_seed(i)
        run = os.path.join(work, f"teacher{i}")
        write_export(
            os.path.join(run, "export"),
            Llama(cfg.model, vocab).state_dict(),
            cfg,
            vocab,
            tokenizer_path=load_meta(data_dir).tokenizer_path,
        )
        members.append(run)
    ens = os.path.join(work, f"ens{n}")
    os.makedirs(ens, exist_ok=True)
    with open(os.path.join(ens, "ensemble.json"), "w") as f:
        json.dump({"members": members}, f)
    return ens


def step_seconds(a, data_dir: str, work: str, teacher: str | None) -> float:
    from megarecipe.analysis.runs import event_dir, read_scalars

    run_dir = tempfile.mkdtemp(prefix="run-", dir=work)
    cmd = [
        str(Path(sys.executable).parent / "torchrun"),
        "--nproc_per_node",
        "1",
        "--master_port",
        str(free_port()),
        "-m",
        "megarecipe.cli.train",
        "configs/tiny.yaml",
        *shape_overrides(a, a.layers),
        f"data.dir={data_dir}",
        "data.train_tokens=null",
        "data.val_tokens=null",
        f"run.dir={run_dir}",
        f"train.global_batch_size={a.batch}",
        f"train.micro_batch_size={a.micro}",
        f"train.stop_after={a.steps}",
        "train.eval_every=1000000",
        "train.checkpoint_every=0",
        "train.progress=false",
        "train.epochs=1",
    ]
    cmd += [f"distill.teacher={teacher}"] if teacher else []
    result = subprocess.run(cmd, cwd=REPO, env=trainer_env(PYTHONWARNINGS="ignore"), capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"run with teacher={teacher} failed:\n{result.stderr[-3000:]}")
    rates = read_scalars(event_dir(run_dir))["perf/tokens_per_sec"]
    return a.batch * a.seq / statistics.median(rates[s] for s in sorted(rates)[a.warmup :])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shape_args(p, steps=20)  # --layers: the student's depth
    p.add_argument("--teacher-layers", type=int, default=8)
    a = p.parse_args()
    os.chdir(REPO)
    ensure_data(a.data)

    with tempfile.TemporaryDirectory() as work:
        cases = [
            ("plain training", None),
            ("distillation, 1 teacher", make_teachers(a, a.data, work, 1)),
            ("distillation, ensemble of 3 teachers", make_teachers(a, a.data, work, 3)),
        ]
        best = {label: float("inf") for label, _ in cases}
        for _ in range(a.rounds):  # interleaved rounds, best of each: a busy neighbour slows one round, not a case
            for label, teacher in cases:
                best[label] = min(best[label], step_seconds(a, a.data, work, teacher))
    base = best["plain training"]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores"
    command = "python benchmarks/distill_bench.py " + " ".join(sys.argv[1:])
    lines = [
        f"`{command.strip()}` — {device}, 1 process; student Llama {a.layers} layers, teachers "
        f"{a.teacher_layers} layers, hidden {a.hidden}, ffn {a.ffn}, heads {a.heads}/{a.kv_heads}, seq {a.seq}, "
        f"global batch {a.batch} (micro {a.micro}); median step of steps {a.warmup + 1}-{a.steps}, best of "
        f"{a.rounds} interleaved rounds.",
        "",
        "| case | s/step | vs plain |",
        "|---|---|---|",
    ]
    lines += [f"| {label} | {best[label]:.3f} | {best[label] / base:.2f}x |" for label, _ in cases]
    table = "\n".join(lines)
    publish(table, "Distillation step time", a.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
