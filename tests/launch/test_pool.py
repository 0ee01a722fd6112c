"""The local backend, with a stand-in trainer: concurrency, thread shares, retries, read-back, refusals."""

import os

import pytest

from megarecipe import rundir
from megarecipe.launch import LaunchError, RunSpec, launch, state
from megarecipe.launch.pool import threads_per_rank
from tests.launch.conftest import starts


def specs(tmp_path, data, lrs, wd=0.8):
    return [
        RunSpec(
            "configs/tiny.yaml",
            [f"data.dir={data}", "data.train_tokens=100000", f"optim.lr={lr}", f"optim.weight_decay={wd}"],
            str(tmp_path / f"lr{lr}_wd{wd}"),
        )
        for lr in lrs
    ]


def test_pool_caps_concurrency_shares_threads_retries_once_and_reads_back(
    tmp_path, fake_data, fake_trainer, monkeypatch
):
    monkeypatch.setenv("FAKE_SECONDS", "0.6")
    monkeypatch.setenv("FAKE_FAIL", "lr0.002")
    runs = specs(tmp_path, fake_data, [0.001, 0.002, 0.003, 0.004, 0.005])
    done = []
    results = launch(runs, parallel=2, on_done=done.append)
    lines = starts(fake_trainer)
    live = [int(line.split("live=")[1].split()[0]) for line in lines]
    assert max(live) <= 2 and max(live) == 2, lines  # two at once, never three
    share = threads_per_rank(2, 1)
    assert all(f"threads={share}" in line for line in lines) and share == max(1, os.cpu_count() // 2)
    assert len({line.split("port=")[1] for line in lines}) == len(lines)  # each start its own port
    assert len(done) == 5 and set(results) == {s.run_dir for s in runs}
    bad = results[runs[1].run_dir]
    assert bad.state == rundir.FAILED and bad.attempts == 2 and "boom" in bad.log_tail
    marked = rundir.RunDir(runs[1].run_dir).info()
    assert state(runs[1].run_dir) == rundir.FAILED and "boom" in " ".join(marked["log_tail"])
    assert all(
        results[s.run_dir].state == rundir.FINISHED and results[s.run_dir].val_loss > 0
        for s in runs
        if s is not runs[1]
    )
    assert sum("lr0.002" in line for line in lines) == 2 and len(lines) == 6  # one retry, nothing else twice

    again = launch(runs, parallel=2)  # everything ended: read back, nothing started
    assert len(starts(fake_trainer)) == 6 and all(r.reused and r.attempts == 0 for r in again.values())
    assert again[runs[0].run_dir].val_loss == results[runs[0].run_dir].val_loss
    launch(runs[1:2], retry_failed=True)  # asked to: the failed run is tried again
    assert sum("lr0.002" in line for line in starts(fake_trainer)) == 4


def test_refusals_come_before_anything_starts(tmp_path, fake_data, fake_trainer):
    runs = specs(tmp_path, fake_data, [0.001])
    launch(runs)
    other = specs(tmp_path, fake_data, [0.001], wd=0.8)
    other[0].overrides.append("train.epochs=3")  # same dir, other settings
    with pytest.raises(LaunchError, match="holds a run with other settings"):
        launch(other + specs(tmp_path, fake_data, [0.009]))
    with pytest.raises(LaunchError, match="model.hidden_size"):
        launch(
            [RunSpec("configs/tiny.yaml", [f"data.dir={fake_data}", "model.hidden_size=130"], str(tmp_path / "bad"))]
        )
    with pytest.raises(LaunchError, match="share a run_dir"):
        launch(runs + runs)
    assert len(starts(fake_trainer)) == 1


def test_a_run_held_by_another_process_is_waited_for_not_started_twice(tmp_path, fake_data, fake_trainer):
    import subprocess
    import sys

    from megarecipe.launch import settings_of

    [spec] = specs(tmp_path, fake_data, [0.001])
    sha, _ = settings_of(spec)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from megarecipe.rundir import RunDir; r = RunDir(sys.argv[1])\n"
                "with r.hold():\n"
                "    r.update(status='running', settings_sha256=sys.argv[2])\n"
                "    print('held', flush=True); time.sleep(1.5)\n"
                "    r.update(status='finished', final={'val_loss': 4.5, 'step': 1}, step=1)\n"
            ),
            spec.run_dir,
            sha,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    result = launch([spec])[spec.run_dir]
    holder.wait(timeout=30)
    assert result.state == rundir.FINISHED and result.val_loss == 4.5 and result.attempts == 0
    assert starts(fake_trainer) == []


def test_each_run_gets_gpus_of_its_own(tmp_path, fake_data, fake_trainer, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    monkeypatch.setenv("FAKE_SECONDS", "2")  # long enough that the first two overlap on a loaded machine
    runs = specs(tmp_path, fake_data, [0.001, 0.002, 0.003])
    for s in runs:
        s.processes = 2
    results = launch(runs, parallel=3)  # 4 GPUs hold two 2-GPU runs at once, not three
    lines = starts(fake_trainer)
    assert all(r.state == rundir.FINISHED for r in results.values()) and len(lines) == 3
    assert max(int(line.split("live=")[1].split()[0]) for line in lines) == 2
    assert {line.split("gpus=")[1] for line in lines} <= {"0,1", "2,3"}


def test_a_run_taken_by_another_process_after_our_check_is_waited_for(tmp_path):
    """Our trainer was refused because another process took the run between the pool's check and the start: that
    is no failure of the run (with retries=0 it was given up on and reported unfinished)."""
    from megarecipe.launch import policy
    from megarecipe.rundir import RunDir

    run = RunDir(str(tmp_path / "run"))
    with run.hold():
        run.update(status=rundir.RUNNING)
        assert policy.next_action(run.path, 0, failures=1, retries=0, resumes=0) == policy.RESUME


def test_a_tally_counts_a_failed_run_once_as_retried_then_given_up(tmp_path):
    """The one bookkeeping both backends share: a run that failed without progress is retried `retries` times
    (each counted as a failure), then given up; a run held by another process is a resume, not a failure."""
    from megarecipe.launch import policy
    from megarecipe.rundir import RunDir

    run = RunDir(str(tmp_path / "run"))
    run.update(status=rundir.FAILED)
    tally = policy.tallies([run.path])[run.path]
    assert tally.decide(0, retries=1) == policy.RETRY and tally.failures == 1
    assert tally.decide(0, retries=1) == policy.GIVE_UP and (tally.failures, tally.resumes) == (1, 0)
    with run.hold():
        run.update(status=rundir.RUNNING)
        assert tally.decide(0, retries=0) == policy.RESUME and (tally.failures, tally.resumes) == (1, 1)
