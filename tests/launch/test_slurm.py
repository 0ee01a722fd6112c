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
                         "--gpus-per-node=4", "--requeue", "--signal=USR1@120", f"--output={first[-1]}/%a.out",
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


def test_array_task_hands_its_args_to_slurm_sbatch(tmp_path):
    """launchers/slurm_array.sbatch as Slurm runs it, with fake scontrol/srun/torchrun: task 1's args file
    reaches torchrun unchanged and the output lands in RUN/train.log."""
    import subprocess

    from megarecipe.launch.slurm import write_tasks

    from tests.helpers import REPO
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fakes = {"scontrol": "echo node7", "srun": 'while [ "${1#--}" != "$1" ]; do shift; done; exec "$@"',
             "torchrun": 'echo "torchrun $*"'}
    for name, body in fakes.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(stat.S_IRWXU)
    runs = [RunSpec("configs/tiny.yaml", [f"optim.lr={lr}", "data.dir=a dir/with space"], str(tmp_path / f"r{lr}"))
            for lr in (0.001, 0.002)]
    write_tasks(runs, str(tmp_path / "tasks"))
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "SLURM_ARRAY_TASK_ID": "1", "SLURM_JOB_NODELIST": "node[7-8]",
           "SLURM_NNODES": "1", "SLURM_JOB_ID": "99", "SLURM_SUBMIT_DIR": str(REPO), "GPUS_PER_NODE": "4",
           "VIRTUAL_ENV": "x"}
    result = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "tasks")], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    log = (tmp_path / "r0.002" / "train.log").read_text()
    assert "--nproc_per_node 4" in log and "--rdzv_endpoint node7:29500" in log
    assert f"-m megarecipe.cli.train configs/tiny.yaml optim.lr=0.002 data.dir=a dir/with space " \
           f"run.dir={runs[1].run_dir} run.resume=true" in log
    assert not (tmp_path / "r0.001" / "train.log").exists()


def test_settings_are_judged_for_the_gpu_nodes_not_the_submitting_machine(tmp_path, fake_data, monkeypatch):
    """A login node without CUDA or Transformer Engine submits model.kernels=te runs (the trainer checks it again
    on the node); a setting wrong anywhere is still refused before sbatch."""
    import pytest

    from megarecipe.launch import LaunchError, slurm

    submitted = []
    monkeypatch.setattr(slurm, "run", lambda todo, *args: submitted.extend(todo) or {})
    base = [f"data.dir={fake_data}", "data.train_tokens=100000", "train.micro_batch_size=8", "train.precision=fp32"]
    spec = RunSpec("configs/tiny.yaml", [*base, "model.kernels=te"], str(tmp_path / "te"), processes=2)
    launch([spec], backend="slurm")
    assert submitted == [spec]
    with pytest.raises(LaunchError, match="model.kernels='flash'"):
        launch([RunSpec("configs/tiny.yaml", [*base, "model.kernels=flash"], str(tmp_path / "x"), 2)], "slurm")
