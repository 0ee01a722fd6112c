"""Run candidates briefly through the real trainer (launch/direct: warm ranks when it may, else the deepspeed
launcher) and read back what they did: tokens/s from the TensorBoard events, model-state bytes per rank from
RUN/memory.json."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
from pathlib import Path

import yaml

import megarecipe
from megarecipe import rundir
from megarecipe.analysis.runs import event_dir, read_scalars
from megarecipe.config import override
from megarecipe.launch import direct
from megarecipe.plan.candidates import Candidate, write_ds_json
from megarecipe.rundir import RunDir
from megarecipe.system import free_port

REPO = Path(megarecipe.__file__).resolve().parent.parent  # configs/ resolve from the checkout, as before


def run_candidate(
    c: Candidate, config_path: str, overrides: list[str], nproc: int, out: str, steps: int, timeout: float = 900
) -> dict:
    """Train `steps` steps of candidate `c` in OUT/runs/NAME with its ds_config written to OUT/ds_configs/."""
    ds = write_ds_json(c.zero, os.path.join(out, "ds_configs", f"{c.zero}.json"))
    run_dir = os.path.join(out, "runs", c.name)
    if os.path.isdir(run_dir):  # an earlier measurement in this scratch dir: its checkpoint would refuse a new run
        if RunDir(run_dir).locked():
            return {"run_dir": run_dir, "error": f"{run_dir} is in use by another process; wait or use another --out"}
        shutil.rmtree(run_dir)
    args = [
        config_path,
        *overrides,
        *c.overrides(ds),
        override("run.dir", run_dir),
        f"train.stop_after={steps}",
        "train.progress=false",
        "train.checkpoint_every=0",
        "train.eval_every=1000000000",
    ]
    env = dict(os.environ, MASTER_PORT=str(free_port()), PYTHONWARNINGS="ignore")
    try:
        result = direct.captured(args, nproc, env, str(REPO), timeout)
    except subprocess.TimeoutExpired:
        return {"run_dir": run_dir, "error": f"timed out after {timeout:.0f} s"}
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        return {"run_dir": run_dir, "error": f"exit {result.returncode}: " + " | ".join(tail)}
    return read_run(run_dir)


def read_run(run_dir: str) -> dict:

    scalars = read_scalars(event_dir(run_dir))
    tps = scalars.get(rundir.TOKENS_PER_SEC, {})
    later = [v for s, v in sorted(tps.items()) if s > 1] or list(tps.values())
    with open(RunDir(run_dir).join(rundir.MEMORY)) as f:
        ranks = json.load(f)["ranks"]
    with open(os.path.join(run_dir, rundir.CONFIG)) as f:
        cfg = yaml.safe_load(f)
    batch_tokens = cfg["train"]["global_batch_size"] * cfg["model"]["seq_len"]
    tokens_per_s = statistics.median(later) if later else None
    states = [r["params"] + r["grads"] + r["optimizer"] for r in ranks]
    peaks = [r["peak_allocated"] for r in ranks if r.get("peak_allocated") is not None]
    return {
        "run_dir": run_dir,
        "tokens_per_s": tokens_per_s,
        "step_seconds": batch_tokens / tokens_per_s if tokens_per_s else None,
        "peak_bytes": max(peaks) if peaks else max(states),
        "peak_is": "cuda_max_allocated" if peaks else "model_states_held",
        "ranks": ranks,
    }
