"""Warm vs cold starts: what a tiny run costs before its first step, and what a 16-point search costs in all.

  python benchmarks/warm_bench.py [--data DIR] [--points 16] [--demo] [--write]

- To the first step: one tiny run of one step, 1 rank (`python -m megarecipe.cli.train`) and 2 ranks
  (`launchers/local.sh 2`), each cold and warm (forked from a forkserver started, and warmed by one run, before
  the measurement). CPU and wall to the first step are the run's own (run.json's `first_step`, rank 0); the
  launch's wall is the whole call.
- A search: `points` tiny runs (19 steps each) through megarecipe.launch at parallel 2, in a fresh interpreter
  each way, CPU = user + system of that interpreter and everything it started (the forkserver and its runs).
- --demo: `make demo`'s job (tools/recipe.py configs/recipe/tiny.yaml) cold and warm, wall and CPU.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from benchmarks.bench_common import ensure_data, publish, trainer_env  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
TINY = [
    "model.num_layers=2",
    "model.hidden_size=64",
    "model.ffn_hidden_size=176",
    "model.num_attention_heads=4",
    "model.num_query_groups=2",
    "model.seq_len=64",
    "data.train_tokens=20000",
    "data.val_tokens=2048",
    "train.epochs=1",
    "train.global_batch_size=16",
    "train.micro_batch_size=4",
    "train.eval_every=1000",
    "train.progress=false",
]


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def first_step(run_dir: str) -> dict:
    with open(os.path.join(run_dir, "run.json")) as f:
        return json.load(f)["first_step"]


def one_step_runs(data: str, work: str) -> list[tuple]:
    from megarecipe.launch import warm

    args = ["configs/tiny.yaml", *TINY, f"data.dir={data}", "train.stop_after=1"]
    env = trainer_env(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    rows = []
    for ranks in (1, 2):
        run = os.path.join(work, f"cold{ranks}")
        cmd = [PY, "-m", "megarecipe.cli.train"] if ranks == 1 else ["bash", "launchers/local.sh", "2"]
        t, c = time.monotonic(), children_cpu()
        subprocess.run([*cmd, *args, f"run.dir={run}"], cwd=REPO, env=env, check=True, capture_output=True)
        rows.append((ranks, "cold", first_step(run), time.monotonic() - t, children_cpu() - c))
    log = os.path.join(work, "warm.log")
    warm.start([*args, f"run.dir={work}/warmup"], env, REPO, log).wait()  # starts and warms the forkserver
    for ranks in (1, 2):
        run = os.path.join(work, f"warm{ranks}")
        t = time.monotonic()
        code = warm.start([*args, f"run.dir={run}"], env, REPO, log, processes=ranks).wait()
        assert code == 0, open(log).read()[-2000:]
        rows.append((ranks, "warm", first_step(run), time.monotonic() - t, None))
    return rows


SEARCH = """
import sys
from megarecipe.launch import RunSpec, launch
data, work, points, tiny = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
specs = [RunSpec("configs/tiny.yaml", [*tiny, f"data.dir={data}", f"optim.lr={1e-3 * (1 + i / points):.6g}"],
                 f"{work}/p{i}") for i in range(points)]
results = launch(specs, parallel=2)
bad = [r.name for r in results.values() if r.state != "finished"]
sys.exit(f"not finished: {bad}" if bad else 0)
"""


def search(data: str, work: str, points: int, how: str) -> tuple[float, float]:
    env = trainer_env(MEGARECIPE_WARM="1" if how == "warm" else "0")
    t, c = time.monotonic(), children_cpu()
    subprocess.run([PY, "-c", SEARCH, data, os.path.join(work, how), str(points), *TINY], cwd=REPO, env=env, check=True)
    return time.monotonic() - t, children_cpu() - c


def demo(work: str, how: str) -> tuple[float, float]:
    env = trainer_env(MEGARECIPE_WARM="1" if how == "warm" else "0")
    t, c = time.monotonic(), children_cpu()
    subprocess.run(
        [PY, "tools/recipe.py", "configs/recipe/tiny.yaml", "--out", os.path.join(work, f"demo-{how}")],
        cwd=REPO,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.monotonic() - t, children_cpu() - c


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/default", help="a prepared data dir (the embedded corpus by default)")
    p.add_argument("--points", type=int, default=16)
    p.add_argument("--demo", action="store_true", help="also time make demo's job cold and warm (minutes)")
    p.add_argument("--write", action="store_true", help="append the tables to benchmarks/RESULTS.md")
    a = p.parse_args()
    ensure_data(a.data)
    data = os.path.abspath(a.data)
    with tempfile.TemporaryDirectory() as work:
        rows = one_step_runs(data, work)
        lines = [
            "| ranks | start | CPU to 1st step (rank 0) s | wall to 1st step s | launch wall s | launch CPU s |",
            "|---|---|---|---|---|---|",
        ]
        for ranks, how, fs, wall, cpu in rows:
            lines.append(
                f"| {ranks} | {how} | {fs['cpu_s']:.2f} | {fs['wall_s']:.2f} | {wall:.2f} | "
                f"{'-' if cpu is None else f'{cpu:.2f}'} |"
            )
        cold = {r[0]: r[2]["cpu_s"] for r in rows if r[1] == "cold"}
        warm_ = {r[0]: r[2]["cpu_s"] for r in rows if r[1] == "warm"}
        lines.append("")
        lines.append(
            "CPU to the first step, cold / warm: " + ", ".join(f"{k} rank(s) {cold[k] / warm_[k]:.1f}x" for k in (1, 2))
        )
        lines.append("")
        lines.append(f"| {a.points}-point tiny search, parallel 2 | wall s | CPU s |")
        lines.append("|---|---|---|")
        got = {how: search(data, work, a.points, how) for how in ("cold", "warm")}
        for how, (wall, cpu) in got.items():
            lines.append(f"| {how} | {wall:.1f} | {cpu:.1f} |")
        lines.append(
            f"| cold / warm | {got['cold'][0] / got['warm'][0]:.2f}x | {got['cold'][1] / got['warm'][1]:.2f}x |"
        )
        if a.demo:
            lines += ["", "| make demo's job | wall s | CPU s |", "|---|---|---|"]
            shown = {how: demo(work, how) for how in ("cold", "warm")}
            for how, (wall, cpu) in shown.items():
                lines.append(f"| {how} | {wall:.0f} | {cpu:.0f} |")
            lines.append(
                f"| cold / warm | {shown['cold'][0] / shown['warm'][0]:.2f}x | "
                f"{shown['cold'][1] / shown['warm'][1]:.2f}x |"
            )
    publish(
        "\n".join(lines),
        "Warm starts (`python benchmarks/warm_bench.py" + (" --demo" if a.demo else "") + "`)",
        a.write,
    )


if __name__ == "__main__":
    main()
