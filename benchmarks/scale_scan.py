"""Scan a candidate demo scale: regularized grid (LR x WD x epochs) and standard grid (WD 0.1) per size, seed 0 on
the whole grid, then seed 1 at each size's best point (and the 2nd best); prints size -> best loss, seed spread,
CPU s per run.

  PYTHONPATH=$PWD .venv/bin/python benchmarks/scale_scan.py NAME [--data DIR] [--budget 4096] [--layers 2]
      [--sizes h32:32:96,h48:48:128,...] [--extra k=v ...] [--reg-only] [--std-only] [--out runs/scale-scan]

DIR is a prepared data dir (tools/prepare_data.py --default --out data/scan-v512 --vocab-size 512). Runs are
read back when finished (the launcher), so a scan killed and started again trains nothing twice. Issue 22.
"""

import argparse
import json
import os
import statistics
import sys
import time

from megarecipe.launch import RunSpec, launch

BASE = [
    "model.seq_len=64",
    "train.global_batch_size=16",
    "train.micro_batch_size=16",
    "train.eval_every=100000",
    "train.progress=false",
    "train.checkpoint_every=100000",
    "parallel.ds_config=zero0",
    "data.val_tokens=32768",
]


def run_seconds(run_dir):
    """A finished run's wall seconds from its run.json (the trainer's start to end; ~CPU s of one thread when the
    machine is not oversubscribed: measure the whole scan's CPU with /usr/bin/time)."""
    with open(os.path.join(run_dir, "run.json")) as f:
        d = json.load(f)
    return d.get("ended", 0) - d.get("started", 0)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("name")
    p.add_argument("--data", default="data/scan-v512")
    p.add_argument("--budget", type=int, default=4096)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--sizes", default="h32:32:96,h48:48:128,h64:64:176,h96:96:256")
    p.add_argument("--extra", nargs="*", default=[])
    p.add_argument("--lr", default="3e-3,1e-2,3e-2")
    p.add_argument("--wd", default="0.8,3.2,12.8")
    p.add_argument("--epochs", default="8,16,32")
    p.add_argument("--std-epochs", default=None)
    p.add_argument("--reg-only", action="store_true")
    p.add_argument("--std-only", action="store_true")
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--out", default="runs/scale-scan")
    a = p.parse_args()
    out = os.path.join(a.out, a.name)
    sizes = []
    for s in a.sizes.split(","):
        name, h, f = s.split(":")
        sizes.append((name, [f"model.hidden_size={h}", f"model.ffn_hidden_size={f}"]))
    common = [*BASE, f"data.dir={a.data}", f"data.train_tokens={a.budget}", f"model.num_layers={a.layers}", *a.extra]
    lrs = [float(x) for x in a.lr.split(",")]
    wds = [float(x) for x in a.wd.split(",")]
    eps = [int(x) for x in a.epochs.split(",")]
    std_eps = [int(x) for x in (a.std_epochs or a.epochs).split(",")]
    stats = {"run_s": 0.0, "trained": 0, "wall": 0.0}

    def go(points, seed):
        specs = []
        for size, so, lr, wd, ep in points:
            rd = os.path.join(out, size, f"lr{lr:g}_wd{wd:g}_ep{ep}_s{seed}")
            ov = [
                *common,
                *so,
                f"optim.lr={lr!r}",
                f"optim.weight_decay={wd!r}",
                f"train.epochs={ep}",
                f"run.seed={seed}",
            ]
            specs.append(RunSpec("tiny", ov, rd))
        t0 = time.time()
        res = launch(specs, backend="local", parallel=a.parallel)
        stats["wall"] += time.time() - t0
        for r in res.values():
            if not r.reused and r.val_loss is not None:
                stats["trained"] += 1
                stats["run_s"] += run_seconds(r.run_dir)
        return [res[s.run_dir].val_loss for s in specs]

    table = {}
    sections = []
    if not a.std_only:
        sections.append(("regularized", wds, eps))
    if not a.reg_only:
        sections.append(("standard", [0.1], std_eps))
    for sec, wgrid, egrid in sections:
        pts = [(n, so, lr, wd, ep) for n, so in sizes for lr in lrs for wd in wgrid for ep in egrid]
        losses = go(pts, 1234)
        best = {}
        for pt, loss in zip(pts, losses, strict=True):
            if loss is None:
                continue
            best.setdefault(pt[0], []).append((loss, pt))
        tops = {n: sorted(v)[:2] for n, v in best.items()}
        again = [pt for n in tops for _, pt in tops[n]]
        l2 = dict(zip([(p[0], p[2], p[3], p[4]) for p in again], go(again, 1235), strict=False))
        for n, _ in sizes:
            rows = []
            for l1, pt in tops.get(n, []):
                s2 = l2.get((pt[0], pt[2], pt[3], pt[4]))
                rows.append({"lr": pt[2], "wd": pt[3], "ep": pt[4], "s0": l1, "s1": s2})
            table.setdefault(sec, {})[n] = rows
    per_run = stats["run_s"] / max(1, stats["trained"])
    print(f"== {a.name}: data {a.data} D={a.budget} layers {a.layers} extra {a.extra}")
    print(f"trained {stats['trained']} runs, {per_run:.1f} s/run (run.json start to end), {stats['wall']:.0f} s wall")
    diffs = []
    for sec, rows_by in table.items():
        print(f"-- {sec}: size  best(mean of 2 seeds at seed-0 best point)  s0 s1  [lr wd ep]  2nd best")
        for n, rows in rows_by.items():
            if not rows:
                print(f"  {n}: none")
                continue
            diffs += [x["s0"] - x["s1"] for x in rows if x["s1"] is not None]
            # the best of the (up to) 2 points by their mean over the 2 seeds
            means = [(statistics.mean([x["s0"], x["s1"]]), x) for x in rows if x["s1"] is not None]
            if not means:
                print(f"  {n}: {rows[0]['s0']:.4f} (seed 1 failed)")
                continue
            bm, bx = min(means, key=lambda t: t[0])
            print(
                f"  {n}: {bm:.4f}  [{bx['lr']:g} {bx['wd']:g} {bx['ep']}]  (s0 {bx['s0']:.4f} s1 {bx['s1']:.4f})"
                + "".join(f" | {x['s0']:.4f}/{x['s1']:.4f} [{x['lr']:g} {x['wd']:g} {x['ep']}]" for x in rows)
            )
    if diffs:
        sd = (sum(d * d for d in diffs) / len(diffs) / 2) ** 0.5  # sd of one run from paired differences
        print(f"seed sd (pooled from {len(diffs)} seed pairs): {sd:.4f}")
    with open(os.path.join(out, "scan.json"), "w") as f:
        json.dump({"args": vars(a), "table": table, "stats": stats}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
