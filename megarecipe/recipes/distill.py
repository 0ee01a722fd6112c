"""The recipe's distillation stage, as the paper did it: sequence-level.

Each teacher of the recipe file (a size and a member count: 1 is that size's regularized run, self-distillation
when it is the student's size; more is an ensemble of that size's members, trained here when the ensemble has
fewer) samples `synthetic_tokens` tokens at the recipe's temperature into a data dir (megarecipe/distill/sample.py).
For each of the teacher's weights w the student trains on data.mix = [real : 1 - w, synthetic : w] with the
recipe's LR, weight decay and epochs, an epoch being one pass over the real budget plus the synthetic share (so
the student sees the real data `epochs` times, as the paper's 16). The extension, token-level logit KD from the
first ensemble teacher (distill.alpha, T = 1), runs beside it when distill.logit_kd is set.

OUT/distill/teachers/<name>/       an ensemble teacher's members, scored (ensemble.json)
OUT/distill/synthetic/<name>/      its samples (a data dir with no validation split)
OUT/distill/<name>_w<weight>/      a student of sequence-level distillation
OUT/distill/logit_kd/              the logit-KD student
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from megarecipe import ensembledir
from megarecipe.config import override
from megarecipe.launch import _terminate_unwinds, number
from megarecipe.recipes.recipe_file import Hyper
from megarecipe.rundir import RunDir
from megarecipe.system import OWNER_PID


def teacher(p, t) -> str:
    """The teacher's directory: the size's regularized run, or a scored ensemble of its first `members`."""
    if t.members == 1:
        return p.plan.regularized[t.size]
    budget = p.r.budget
    hp = Hyper(**p.plan.ensemble_hyper[p.key(t.size, budget)])
    runs, specs = p.member_runs(t.size, budget, hp, p.plan.ensembles[t.size], count=t.members)
    p.run_all(specs)
    out = os.path.abspath(os.path.join(p.out, "distill", "teachers", t.name))
    p._score(runs[: t.members], out, scored=p.plan.ensembles[t.size])  # scored by the ensembles stage
    return out


def synthetic(p, t, teacher_dir: str) -> tuple[str, list | None]:
    """The teacher's samples dir, and the `distill sample` command that draws them (None when they are there):
    it runs in its own process (the recipe tools never load the model code); a killed call continues from its
    finished shards."""
    dc = p.r.distill
    out = os.path.abspath(os.path.join(p.out, "distill", "synthetic", t.name))
    tokens = dc.synthetic_tokens or 4 * p.r.budget
    if os.path.isfile(os.path.join(out, "meta.json")):
        return out, None
    cmd = [
        sys.executable,
        "-m",
        "megarecipe.cli.distill",
        "sample",
        "--teacher",
        teacher_dir,
        "--out",
        out,
        "--tokens",
        str(tokens),
        "--temperature",
        repr(dc.temperature),
        "--seed",
        str(p.r.seed),
        "--batch",
        "64",
    ]
    return out, cmd


def sample_all(p, jobs: list[tuple[str, list]]) -> None:
    """Run the teachers' `distill sample` commands (name, command), launch.parallel at once, each with the
    threads of one of them (a sample's bytes do not depend on its threads); one line for the first that
    failed, after all have ended."""
    if not jobs:
        return
    p.worked = True
    dc = p.r.distill
    tokens = dc.synthetic_tokens or 4 * p.r.budget
    threads = str(p.threads())
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": threads, "MEGARECIPE_THREADS": threads}
    env[OWNER_PID] = str(os.getpid())  # a sample stops when this tool is gone, kill -9 included
    queue, live, failed = list(jobs), [], []
    # SIGTERM becomes SystemExit meanwhile, as while runs are live: the clean-up below stops the samples instead
    # of the tool dying alone and leaving them drawing (a rerun would draw the same shards beside them)
    with _terminate_unwinds():
        _sample_live(p, queue, live, failed, tokens, dc.temperature, env)
    if failed:
        name, last = failed[0]
        raise p.error(f"distill/synthetic/{name}: sampling failed ({last}); run the recipe again to resume it")


def _sample_live(p, queue: list, live: list, failed: list, tokens: int, temperature: float, env: dict) -> None:
    try:
        while queue or live:
            while queue and len(live) < max(1, p.r.launch.parallel):
                name, cmd = queue.pop(0)
                p.log(f"  distill/synthetic/{name}: sampling {tokens:,} tokens at T = {temperature:g}")
                err = tempfile.TemporaryFile("w+", errors="replace")  # a child's stderr need not be UTF-8
                proc = subprocess.Popen(
                    cmd, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL, text=True, env=env
                )
                live.append((name, proc, err))
            time.sleep(0.2)
            for item in [x for x in live if x[1].poll() is not None]:
                live.remove(item)
                name, proc, err = item
                if proc.returncode != 0:
                    err.seek(0)
                    failed.append((name, (err.read().strip().splitlines() or ["no output"])[-1]))
                err.close()
    finally:
        for _, proc, err in live:  # stopped (Ctrl-C, SIGTERM): a killed sample continues from its shards
            proc.terminate()
            proc.wait()
            err.close()


def _share(w: float) -> str:
    return f"{w:.6g}"


def run(p) -> None:
    dc = p.r.distill
    student, real = dc.student, p.r.data.dir
    hp = Hyper(dc.lr, dc.weight_decay, dc.epochs)
    specs, rows, teachers = [], [], {}
    synths, jobs = {}, []
    for t in dc.teachers:  # the teachers first, then their samples all at once
        teachers[t.name] = teacher(p, t)
        synths[t.name], cmd = synthetic(p, t, teachers[t.name])
        if cmd:
            jobs.append((t.name, cmd))
    sample_all(p, jobs)
    for t in dc.teachers:
        synth = synths[t.name]
        for w in t.weights:
            run_dir = os.path.abspath(os.path.join(p.out, "distill", f"{t.name}_w{_share(w)}"))
            mix = override("data.mix", f"[{real}:{_share(1 - w)},{synth}:{_share(w)}]")
            specs.append(p.spec(student, hp, run_dir, extra=[mix]))
            rows.append(
                {
                    "teacher": t.name,
                    "teacher_dir": teachers[t.name],
                    "teacher_size": t.size,
                    "members": t.members,
                    "self": t.size == student and t.members == 1,
                    "weight": w,
                    "student": run_dir,
                }
            )
    kd = None
    ens = [t for t in dc.teachers if t.members > 1]
    if dc.logit_kd and ens:
        kd_dir = os.path.abspath(os.path.join(p.out, "distill", "logit_kd"))
        extra = [
            override("distill.teacher", teachers[ens[0].name]),
            f"distill.alpha={dc.alpha!r}",
            "distill.temperature=1.0",
        ]
        specs.append(p.spec(student, p.hyper("regularized", student), kd_dir, extra=extra))
        kd = {
            "teacher": ens[0].name,
            "teacher_dir": teachers[ens[0].name],
            "student": kd_dir,
            "alpha": dc.alpha,
            "hyper": {"lr": p.hyper("regularized", student).lr},
        }
    p.run_all(specs)
    if kd:
        taught = ((RunDir(kd["student"]).info() or {}).get("distill") or {}).get("members")
        now = ensembledir.read(kd["teacher_dir"]).get("members")
        if taught != now:  # the run's settings name the teacher's dir, not its members: a finished one is read back
            raise p.error(
                f"{kd['student']} was distilled from {len(taught or [])} member(s) of {kd['teacher_dir']}, "
                f"which now has {len(now or [])}; move {kd['student']} aside to distil from it as it is"
            )
    p.plan.distill = {
        "size": student,
        "single": p.plan.regularized[student],
        "sequence": rows,
        "logit_kd": kd,
        "hyper": {"lr": dc.lr, "weight_decay": dc.weight_decay, "epochs": dc.epochs},
        "synthetic_tokens": dc.synthetic_tokens or 4 * p.r.budget,
        "temperature": dc.temperature,
        "lr_text": number(dc.lr),
    }
    p._save()
