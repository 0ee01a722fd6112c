"""CPU threads per rank: the same one-process run on 1 and on 2 torch threads, side by side, for a tiny model (the
tests' shape) and a small one (this file's default shape). Each run is a new interpreter; the CPU figure is the
run's own (user + sys, imports included), the wall figure the run's. The machine's load average is printed: an
OpenMP thread that is descheduled stalls every op of the others.

  python benchmarks/threads_bench.py [--rounds 2] [--write]
"""

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_common import ensure_data, publish, trainer_env  # noqa: E402

SHAPES = {
    "tiny (h64, 2 layers, seq 64)": [
        "model.num_layers=2",
        "model.hidden_size=64",
        "model.ffn_hidden_size=176",
        "model.seq_len=64",
        "train.global_batch_size=16",
        "train.micro_batch_size=4",
    ],
    "small (h256, 4 layers, seq 256)": [
        "model.num_layers=4",
        "model.hidden_size=256",
        "model.ffn_hidden_size=704",
        "model.seq_len=256",
        "train.global_batch_size=16",
        "train.micro_batch_size=8",
    ],
}


def run_once(data: str, shape: list[str], threads: int, steps: int) -> tuple[float, float]:
    out = tempfile.mkdtemp(prefix="threads-")
    try:
        cmd = [sys.executable, "-m", "megarecipe.cli.train", "configs/tiny.yaml", *shape, f"data.dir={data}"]
        cmd += [
            f"run.dir={out}/run",
            f"train.stop_after={steps}",
            "data.train_tokens=200000",
            "train.eval_every=100000",
            "train.progress=false",
        ]
        env = trainer_env(MEGARECIPE_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
        before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        wall, after = time.monotonic() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
        return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, wall
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--data", default="data/default")
    p.add_argument("--write", action="store_true")
    a = p.parse_args()
    ensure_data(a.data)
    load = os.getloadavg()[0]
    rows = [
        "| shape | threads | CPU s | wall s | CPU vs 1 thread | wall vs 1 thread |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, shape in SHAPES.items():
        spent = {1: [], 2: []}
        for _ in range(a.rounds):  # interleaved, so a change of load hits both
            for threads in (1, 2):
                spent[threads].append(run_once(a.data, shape, threads, a.steps))
        best = {t: (min(c for c, _ in v), min(w for _, w in v)) for t, v in spent.items()}
        for t in (1, 2):
            cpu, wall = best[t]
            rows.append(
                f"| {name} | {t} | {cpu:.1f} | {wall:.1f} | {cpu / best[1][0]:.2f}x | {wall / best[1][1]:.2f}x |"
            )
    table = "\n".join(rows) + (
        f"\n\n{a.steps} steps per run, best of {a.rounds} interleaved rounds, imports included; "
        f"load average {load:.1f} at the start on {os.cpu_count()} cores."
    )
    publish(table, "Threads per CPU rank (`python benchmarks/threads_bench.py`)", a.write)


if __name__ == "__main__":
    main()
