"""The search's cost: runs needed to certify a local optimum vs the full grid (synthetic objectives shaped
around the paper's optima), and the wall time of a tiny real search at --parallel 1 vs 2.

  python benchmarks/tune_bench.py [--skip-real] [--data DIR]
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from megarecipe.recipes.search import EPOCHS, LR, WEIGHT_DECAY, Grid, coordinate_descent  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The paper's locally optimal points at 200M tokens (epochs, LR, WD), and the presets' starts.
OPTIMA = {"150m": (16, 3e-3, 0.8), "300m": (16, 3e-3, 1.6), "600m": (8, 1e-3, 3.2), "1.4b": (8, 1e-3, 3.2)}
STANDARD = {"150m": (8, 3e-3), "300m": (8, 1e-3), "600m": (4, 1e-3), "1.4b": (4, 3e-4)}


def bowl(best, weights=(0.1, 1.0, 0.3)):
    def f(p):
        e, lr, wd = p["epochs"], p["lr"], p.get("weight_decay", 0.1)
        return (
            3
            + weights[0] * math.log2(e / best[0]) ** 2
            + weights[1] * math.log10(lr / best[1]) ** 2
            + weights[2] * math.log2((wd + 0.05) / (best[2] + 0.05)) ** 2
        )

    return lambda points: [f(p) for p in points]


def counts():
    rows = []
    full = Grid(("epochs", "lr", "weight_decay"), (EPOCHS, LR, WEIGHT_DECAY))
    std = Grid(("epochs", "lr", "weight_decay"), (EPOCHS, LR, (0.1,)))
    for name, best in OPTIMA.items():
        for label, start in (
            ("from the paper's optimum", best),
            ("from a default start 1/3e-3/0.1", (1, 3e-3, 0.1)),
            ("from a far corner 64/1e-4/12.8", (64, 1e-4, 12.8)),
        ):
            res = coordinate_descent(full, full.snap(dict(zip(full.names, start, strict=True))), bowl(best))
            rows.append((f"{name} regularized, {label}", len(res.rounds), len(res.evaluated) + 1, full.size()))
        sb = (*STANDARD[name], 0.1)
        res = coordinate_descent(std, std.snap({"epochs": 1, "lr": 3e-3, "weight_decay": 0.1}), bowl(sb))
        rows.append((f"{name} standard (WD 0.1), from 1/3e-3", len(res.rounds), len(res.evaluated) + 1, std.size()))
    names = list(OPTIMA)
    for prev, name in zip(names, names[1:], strict=False):  # a ladder: each size from the previous optimum
        start = dict(zip(full.names, OPTIMA[prev], strict=True))
        res = coordinate_descent(full, full.snap(start), bowl(OPTIMA[name]))
        rows.append(
            (
                f"{name} regularized, ladder start at {prev}'s optimum",
                len(res.rounds),
                len(res.evaluated) + 1,
                full.size(),
            )
        )
    return rows


def real(data: str, parallel: int, work: str, extra=()) -> tuple[float, dict]:
    config = os.path.join(work, "tiny-search.yaml")
    with open(config, "w") as f:
        f.write(f"""model: {{num_layers: 1, hidden_size: 32, ffn_hidden_size: 96, num_attention_heads: 2,
        num_query_groups: 1, seq_len: 32}}
data: {{dir: {data}, train_tokens: 4000, val_tokens: 1024}}
optim: {{lr: 1.0e-2, weight_decay: 0.1}}
train: {{epochs: 1, global_batch_size: 16, micro_batch_size: 16, eval_every: 100, eval_batch_size: 16,
        checkpoint_every: 0, progress: false}}
""")
    out = os.path.join(work, f"p{parallel}")
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "tools/tune.py",
            config,
            "--out",
            out,
            "--parallel",
            str(parallel),
            "--epochs",
            "1",
            "--lr",
            "3e-3,1e-2",
            "--wd",
            "0.1,0.4",
            *extra,
        ],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - t
    with open(os.path.join(out, "certificate.json")) as f:
        return seconds, json.load(f)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--data", help="a prepared data dir (default: a slice of the embedded corpus, prepared here)")
    args = ap.parse_args()
    print("| search | rounds | runs to certify (incl. seed re-run) | full grid |\n|---|---|---|---|")
    for row in counts():
        print("| " + " | ".join(map(str, row)) + " |")
    if args.skip_real:
        return
    work = tempfile.mkdtemp(prefix="tune_bench_")
    data = args.data
    if not data:
        from megarecipe.data.corpus import shakespeare_files, sotu_files
        from megarecipe.data.prepare import prepare

        files = sotu_files()[::12] + [f for f in shakespeare_files() if os.path.basename(f) == "hamlet_gut.txt"]
        data = os.path.join(work, "data")
        prepare(files, data, vocab_size=2000, val_tokens=20_000)
    load = os.getloadavg()[0]
    times = {f"--parallel {p}": real(data, p, work) for p in (1, 2)}
    times["--parallel 4 --seed-early"] = real(data, 4, work, ["--seed-early"])
    print(f"\ntiny real search, {os.cpu_count()} CPU cores, load average {load:.1f} at the start:")
    for p, (t, cert) in times.items():
        print(f"{p}: {t:.1f} s, {cert['rounds']} round(s), {cert['runs']} runs, centre {cert['centre']}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
