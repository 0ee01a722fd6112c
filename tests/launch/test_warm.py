"""Warm starts behave as cold ones: the same losses bit for bit, exit status, log, signals, and no rank outliving
the tool that started it."""

import json
import os
import signal
import subprocess
import sys
import time
from multiprocessing import forkserver

import pytest

from megarecipe.launch import RunSpec, launch, warm
from megarecipe.launch.pool import LocalPool
from tests.helpers import REPO, TINY, alive, descendants, env, losses, pid_parent, scalars, train

pytestmark = pytest.mark.skipif(warm.cold_reason([]) is not None, reason="warm starts are off here")


def test_a_warm_run_trains_as_a_cold_one(tiny_data, tmp_path):
    """The same run started cold (a new interpreter) and warm (forked): the same losses bit for bit, the same
    exit status and last line; the warm one reaches its first step for a fraction of the CPU."""
    cold, cold_result = train(tmp_path, "cold", 0, tiny_data, cold=True)
    hot, hot_result = train(tmp_path, "warm", 0, tiny_data)
    assert losses(hot) == losses(cold) and len(losses(cold)) == 8
    assert hot_result.returncode == cold_result.returncode == 0
    assert hot_result.stdout.splitlines()[-1].split(";")[0] == cold_result.stdout.splitlines()[-1].split(";")[0]
    first = {name: json.loads((tmp_path / name / "run.json").read_text())["first_step"] for name in ("cold", "warm")}
    assert first["warm"]["cpu_s"] < first["cold"]["cpu_s"] / 2, first


def test_the_server_runs_no_thread_before_forking(tiny_data, tmp_path):
    """Every run is a fork of the server: a thread there (OpenBLAS's pool, a tokenizer's) would not exist in the
    child, holding whatever lock it held."""
    train(tmp_path, "run", 0, tiny_data)
    pid = forkserver._forkserver._forkserver_pid
    assert pid and len(os.listdir(f"/proc/{pid}/task")) == 1


def test_bad_settings_exit_2_with_one_line(tiny_data, tmp_path):
    _, result = train(tmp_path, "bad", 0, tiny_data, "optim.lr=-1", check=False)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and "optim.lr" in lines[0]


def test_a_machine_with_gpus_starts_cold(fake_data, fake_trainer, tmp_path, monkeypatch):
    """Forking after CUDA may have been initialised is unsafe: with GPUs visible the pool starts a new
    interpreter per run (here the fake trainer's command, as a cold start would run the trainer's)."""
    monkeypatch.delenv("MEGARECIPE_TRAINER")
    assert warm.cold_reason(["0"]) and warm.cold_reason([]) is None
    monkeypatch.setattr("megarecipe.launch.pool.visible_gpus", lambda: ["0"])
    monkeypatch.setattr(
        "megarecipe.launch.pool.command",
        lambda spec: [sys.executable, str(REPO / "tests" / "fake_trainer.py"), *spec.trainer_args()],
    )
    spec = RunSpec("configs/tiny.yaml", [f"data.dir={fake_data}"], str(tmp_path / "gpu"))
    LocalPool(1, 0).run([spec])
    header = (tmp_path / "gpu" / "train.log").read_text().splitlines()[0]
    assert "cold (GPUs are visible" in header
    assert len(open(fake_trainer).read().splitlines()) == 1


TOOL = """
import sys
from megarecipe.launch import RunSpec, launch
launch([RunSpec("configs/tiny.yaml", sys.argv[2:], sys.argv[1], processes=2)])
"""


def test_kill_9_of_the_tool_stops_its_warm_ranks_and_the_run_resumes(tiny_data, tmp_path):
    """A tool killed with SIGKILL cannot stop its runs itself: the forkserver sees it gone and exits, and each
    rank, told by the kernel that its parent died, stops as on SIGTERM (a checkpoint, then exit). Nothing is left
    training while holding run.lock, and the next launch resumes the run where it stopped."""
    extra = ["train.stop_after=null", "train.epochs=4", "train.eval_every=20", "train.checkpoint_every=10"]
    run_dir = tmp_path / "run"
    args = [*TINY, *extra, f"data.dir={tiny_data}"]
    tool = subprocess.Popen(
        [sys.executable, "-c", TOOL, str(run_dir), *args],
        cwd=REPO,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pointer = run_dir / "checkpoints" / "latest"
    deadline = time.time() + 240
    while time.time() < deadline and not pointer.exists():
        assert tool.poll() is None, (run_dir / "train.log").read_text()[-3000:]
        time.sleep(0.1)
    server = descendants(tool.pid)
    ranks = [pid for pid in server if pid_parent(pid) in server]
    assert pointer.exists() and len(ranks) == 2, "the run never reached its first checkpoint"
    tool.kill()
    tool.wait()
    killed = time.time()
    while any(alive(pid) for pid in server) and time.time() - killed < 60:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in server), "a rank outlived the tool that started it"
    log = (run_dir / "train.log").read_text()
    assert "stopped on a signal" in log, log[-3000:]
    stopped_at = pointer.read_text()
    assert stopped_at < "step00000077"

    results = launch([RunSpec("configs/tiny.yaml", args, str(run_dir), processes=2)])
    assert results[str(run_dir)].state == "finished"
    assert sorted(scalars(run_dir, "train/loss")) == list(range(1, 79))  # resumed where it stopped (exactness
    # after a stop at a step boundary: tests/distributed/test_train.py::test_sigterm_checkpoints_and_resumes_exactly)


def test_sigint_is_ignored_and_sigterm_checkpoints(tiny_data, tmp_path):
    """As a cold run under the pool: Ctrl-C (which reaches the whole terminal group) leaves a warm run training;
    SIGTERM stops it at a step boundary with a checkpoint, exit status 0."""
    run_dir = tmp_path / "run"
    args = [
        "configs/tiny.yaml",
        *TINY,
        "train.stop_after=null",
        "train.epochs=4",
        f"data.dir={tiny_data}",
        f"run.dir={run_dir}",
    ]
    run = warm.start(args, env(), str(REPO), str(tmp_path / "log"))
    deadline = time.time() + 120
    while time.time() < deadline and not list((run_dir / "tb").glob("events*")):
        time.sleep(0.05)
    time.sleep(0.5)
    run.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert run.poll() is None, (tmp_path / "log").read_text()[-2000:]
    run.send_signal(signal.SIGTERM)
    assert run.wait(120) == 0
    assert "stopped on a signal" in (tmp_path / "log").read_text()
    assert (run_dir / "checkpoints" / "latest").exists()
