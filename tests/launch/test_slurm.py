"""The Slurm backend and launchers/slurm*.sbatch against a real one-node Slurm (the slurm fixture; skipped with
its reason where it cannot run). The fake trainer stands in wherever the real one is not the point."""

import os
import subprocess
import time

import pytest

from megarecipe import rundir
from megarecipe.launch import RunSpec, launch
from megarecipe.launch import slurm as backend
from megarecipe.rundir import RunDir
from tests.helpers import REPO, TINY, env, losses, train
from tests.launch.conftest import wait_for_an_idle_node


def specs(tmp_path, fake_data, lrs, processes=1):
    base = [f"data.dir={fake_data}", "data.train_tokens=100000", "train.micro_batch_size=8"]
    return [
        RunSpec("configs/tiny.yaml", [*base, f"optim.lr={lr}"], str(tmp_path / "sweep" / f"lr{lr}"), processes)
        for lr in lrs
    ]


def status(spec) -> str | None:
    return (RunDir(spec.run_dir).info() or {}).get("status")


def wait_for(predicate, what: str, timeout: float = 300):  # generous: on a loaded 2-core machine
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def log_of(spec) -> str:
    return open(os.path.join(spec.run_dir, "train.log")).read()


def submit(runs, tmp_path, parallel=2, extra=None) -> str:
    return backend.submit(runs, str(tmp_path / "tasks"), parallel, 1, extra or [])


def test_sbatch_command():
    runs = [RunSpec("configs/tiny.yaml", [], f"r{i}", processes=4) for i in range(3)]
    assert backend.sbatch_command(runs, "T", 2, gpus_per_node=4, extra=["--partition=gpu"]) == [
        "sbatch",
        "--parsable",
        "--array=0-2%2",
        "--job-name=megarecipe-launch",
        "--nodes=1",
        "--gpus-per-node=4",
        "--requeue",
        "--signal=USR1@120",
        "--output=T/%a.out",
        "--export=ALL,GPUS_PER_NODE=4",
        "--partition=gpu",
        str(backend.SCRIPT),
        "T",
    ]


def test_wait_follows_a_requeued_task_and_outlasts_a_failing_squeue(monkeypatch):
    """What squeue answered while a task was requeued (COMPLETING, REQUEUED, then PENDING with reason BeginTime)
    or while slurmctld was busy (an error, no output) is not the end of the job; only ended states are."""
    answers = [
        (1, "", "slurm_load_jobs error: Socket timed out on send/recv operation"),
        (0, "RUNNING\n", ""),
        (0, "COMPLETING\n", ""),
        (0, "REQUEUED\n", ""),
        (0, "PENDING\n", ""),
        (0, "RUNNING\nPENDING\n", ""),
        (0, "COMPLETED\nFAILED\n", ""),
        (0, "never asked\n", ""),
    ]
    asked = []

    def squeue(cmd, **kwargs):
        asked.append(cmd)
        code, out, err = answers[min(len(asked), len(answers)) - 1]
        return subprocess.CompletedProcess(cmd, code, out, err)

    monkeypatch.setattr(backend.subprocess, "run", squeue)
    monkeypatch.setenv("MEGARECIPE_SLURM_POLL_S", "0")
    backend.wait("7")
    assert len(asked) == 7 and asked[0] == ["squeue", "-h", "-t", "all", "-j", "7", "-o", "%T"]
    answers[:] = [(1, "", "slurm_load_jobs error: Invalid job id specified")]  # gone from slurmctld's memory
    asked.clear()
    backend.wait("7")
    assert len(asked) == 1
    answers[:] = [(1, "", "slurm_load_jobs error: Unable to contact slurm controller (connect failure)")]
    with pytest.raises(backend.LaunchError, match="squeue cannot tell how job 7 stands .*Unable to contact"):
        backend.wait("7", patience_s=0.05)


@pytest.mark.slow
def test_requeued_member_resumes_from_its_checkpoint(tmp_path, fake_data, slurm, monkeypatch):
    monkeypatch.setenv("FAKE_SECONDS", "120")
    monkeypatch.setenv("FAKE_RESUME_SECONDS", "0.5")
    [run] = specs(tmp_path, fake_data, (0.001,))
    job = submit([run], tmp_path)
    try:
        wait_for(lambda: status(run) == rundir.RUNNING, "the task to start")
        subprocess.run(["scontrol", "requeue", job], check=True, capture_output=True)
        wait_for(lambda: status(run) == rundir.STOPPED, "the requeued task to checkpoint", 60)
        # a requeued job waits ~2 min before it may start again; a real scheduler's delay, skipped here
        state = ["squeue", "-h", "-j", job, "-o", "%T"]
        wait_for(
            lambda: subprocess.run(state, capture_output=True, text=True).stdout.strip() == "PENDING",
            "the job to be pending again",
            60,
        )
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True, capture_output=True)
        backend.wait(job)
    finally:
        subprocess.run(["scancel", job], capture_output=True)
    log = log_of(run)
    assert "stopped on SIGTERM at step 1" in log and "(restart 1)" in log and "from step 1" in log, log
    assert status(run) == rundir.FINISHED


@pytest.mark.slow
def test_signal_before_the_time_limit_reaches_the_trainer(tmp_path, fake_data, slurm, monkeypatch):
    """--signal=USR1@60: once the trainer runs, its job's limit is cut to 1 minute, so the signal is due at
    once; slurmctld sends it at its next time-limit check (every 30 s). torchrun passes it on and the trainer
    checkpoints and ends before the limit. (A limit short from the start would send it while torchrun starts:
    the checks' 30 s are also how early Slurm may signal.)"""
    monkeypatch.setenv("FAKE_SECONDS", "110")
    [run] = specs(tmp_path, fake_data, (0.001,))
    job = submit([run], tmp_path, extra=["--time=10", "--signal=USR1@60"])
    try:
        wait_for(lambda: status(run) == rundir.RUNNING, "the task to start")
        subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=1"], check=True, capture_output=True)
        backend.wait(job)
    finally:
        subprocess.run(["scancel", job], capture_output=True)
    # The limit itself would have sent SIGTERM: the trainer stopped on the early signal alone. (No wall-clock
    # bound: the wait's squeue polling on a loaded machine adds tens of seconds after the trainer has ended.)
    log = log_of(run)
    assert "stopped on SIGUSR1 at step 1" in log and "SIGTERM" not in log, log
    assert status(run) == rundir.STOPPED


@pytest.mark.slow
def test_parallel_array_and_scancel_of_the_sweep(tmp_path, fake_data, slurm, monkeypatch):
    """A 3-task array at %2 runs two tasks at once through slurm_array.sbatch -> slurm.sbatch -> srun ->
    torchrun. What the launcher does when interrupted (`scancel --signal=USR1 --full`) makes both checkpoint;
    launch(backend="slurm", parallel=2) of the sweep then resumes them and runs the third, two at a time."""
    monkeypatch.setenv("FAKE_SECONDS", "120")
    monkeypatch.setenv("FAKE_RESUME_SECONDS", "0.5")
    runs = specs(tmp_path, fake_data, (0.001, 0.002, 0.003))
    job = submit(runs, tmp_path, parallel=2)
    try:
        wait_for(lambda: [status(s) for s in runs[:2]] == [rundir.RUNNING] * 2, "two tasks to start")
        time.sleep(2)
        assert status(runs[2]) is None  # the third waits for a free slot
        backend.cancel(job)
        backend.wait(job)
    finally:
        subprocess.run(["scancel", job], capture_output=True)
    assert [status(s) for s in runs] == [rundir.STOPPED, rundir.STOPPED, None], [log_of(s) for s in runs[:2]]
    assert all("stopped on SIGUSR1 at step 1" in log_of(s) for s in runs[:2])
    slurm.write_text("")
    monkeypatch.setenv("FAKE_SECONDS", "3")
    results = launch(runs, backend="slurm", parallel=2, gpus_per_node=1)
    assert [results[s.run_dir].state for s in runs] == [rundir.FINISHED] * 3
    assert all("from step 1" in log_of(s) for s in runs[:2]) and "from step 0" in log_of(runs[2])
    live = [int(line.split("live=")[1].split()[0]) for line in slurm.read_text().splitlines()]
    assert len(live) == 3 and max(live) <= 2, live


@pytest.mark.slow
def test_slurm_sbatch_trains_two_ranks_to_the_losses_of_local(tmp_path, tiny_data, slurm_conf):
    """`sbatch launchers/slurm.sbatch` with 2 ranks (srun, torchrun's c10d rendezvous, the real trainer) ends
    with the losses of the same run of 2 processes started locally (warm: the local launchers have their own
    real-launcher tests, and a warm run trains as a cold one)."""
    common = ["configs/tiny.yaml", *TINY, f"data.dir={tiny_data}"]
    reference, _ = train(tmp_path, "local", 2, tiny_data)
    wait_for_an_idle_node(slurm_conf)
    run_dir = tmp_path / "slurm"
    out = tmp_path / "job.out"
    job = subprocess.run(
        [
            "sbatch",
            "--wait",
            "--gpus-per-node=2",
            "--export=ALL,GPUS_PER_NODE=2",
            f"--output={out}",
            "launchers/slurm.sbatch",
            *common,
            f"run.dir={run_dir}",
        ],
        cwd=REPO,
        env={**env(), "SLURM_CONF": slurm_conf},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert job.returncode == 0, out.read_text()[-3000:] if out.exists() else job.stderr
    assert RunDir(str(run_dir)).info()["perf"]["world_size"] == 2
    assert len(losses(reference)) >= 4 and losses(run_dir) == losses(reference)


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
