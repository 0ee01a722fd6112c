"""The Slurm backend against fake sbatch/squeue on PATH: what it asks Slurm for, how it resumes a preempted run
and retries a failed one. The fake sbatch records its arguments and plays each array task with the stand-in
trainer, from the task's args file exactly as launchers/slurm_array.sbatch reads it."""
import json
import os
import stat
import sys

from megarecipe import rundir
from megarecipe.launch import RunSpec, launch
from megarecipe.launch.slurm import SCRIPT

from tests.launch.conftest import FAKE_TRAINER

SBATCH = f"""#!{sys.executable}
import json, os, re, subprocess, sys
from megarecipe.rundir import RunDir
log = os.environ["FAKE_SLURM_LOG"]
with open(log, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
calls = sum(1 for _ in open(log))
n = int(re.search(r"--array=0-(\\d+)%", " ".join(sys.argv)).group(1)) + 1
task_dir = sys.argv[-1]
for i in range(n):
    args = open(os.path.join(task_dir, f"{{i}}.args")).read().splitlines()
    run_dir, train_args = args[0], args[1:]
    if calls == 1 and os.environ.get("FAKE_PREEMPT", "-") in run_dir:   # preempted mid-run: stopped at step 5
        RunDir(run_dir).update(status="stopped", step=5)
        continue
    with open(os.path.join(run_dir, "train.log"), "a") as out:
        subprocess.run({FAKE_TRAINER.split()!r} + train_args, stdout=out, stderr=out)
print(f"4242{{calls}};cluster")
"""
SQUEUE = """#!/bin/sh
# the array is listed once, then gone
if [ ! -e "$FAKE_SLURM_LOG.q$2" ]; then touch "$FAKE_SLURM_LOG.q$2"; echo "$2_0"; fi
"""


def test_slurm_job_arrays(tmp_path, fake_data, fake_trainer, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", SBATCH), ("squeue", SQUEUE), ("scancel", "#!/bin/sh\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    log = tmp_path / "slurm.log"
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_LOG", str(log))
    monkeypatch.setenv("MEGARECIPE_SLURM_POLL_S", "0.01")
    monkeypatch.setenv("FAKE_PREEMPT", "lr0.003")
    monkeypatch.setenv("FAKE_FAIL", "lr0.002")
    monkeypatch.setenv("FAKE_SECONDS", "0")
    base = [f"data.dir={fake_data}", "data.train_tokens=100000", "train.micro_batch_size=8"]
    runs = [RunSpec("configs/tiny.yaml", [*base, f"optim.lr={lr}"], str(tmp_path / "sweep" / f"lr{lr}"), processes=4)
            for lr in (0.001, 0.002, 0.003)]
    results = launch(runs, backend="slurm", parallel=2, slurm_args=["--partition=gpu"])

    calls = [json.loads(line) for line in log.read_text().splitlines()]
    first = calls[0]
    assert first[:9] == ["--parsable", "--array=0-2%2", "--job-name=megarecipe-launch", "--nodes=1",
                         "--gpus-per-node=4", "--requeue", "--signal=USR1@120", "--output=/dev/null",
                         "--export=ALL,GPUS_PER_NODE=4"]
    assert first[9:] == ["--partition=gpu", str(SCRIPT), first[-1]]
    args = (open(os.path.join(first[-1], "0.args")).read().splitlines())
    assert args == [os.path.abspath(runs[0].run_dir), "configs/tiny.yaml", *runs[0].overrides,
                    f"run.dir={runs[0].run_dir}", "run.resume=true"]
    # round 2: the preempted run resumes and the failed one is retried, in one array; then the failure is final
    assert [c[1] for c in calls] == ["--array=0-2%2", "--array=0-1%2"]
    assert results[runs[0].run_dir].state == rundir.FINISHED and results[runs[0].run_dir].attempts == 1
    assert results[runs[2].run_dir].state == rundir.FINISHED and results[runs[2].run_dir].attempts == 2
    failed = results[runs[1].run_dir]
    assert failed.state == rundir.FAILED and failed.attempts == 2 and "boom" in failed.log_tail
