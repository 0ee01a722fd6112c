"""tools/tune.py as a user runs it, with the stand-in trainer: killed mid-search (SIGTERM, then SIGKILL, to its
process group) and started again, it trains nothing twice and ends with the certificate; --status shows what
ran and what is left."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from megarecipe import rundir
from megarecipe.rundir import RunDir
from tests.helpers import REPO
from tests.launch.conftest import starts


def command(out, data):
    return [
        sys.executable,
        "tools/tune.py",
        "configs/tiny.yaml",
        "--out",
        str(out),
        "--parallel",
        "2",
        f"data.dir={data}",
        "data.train_tokens=100000",
        "--epochs",
        "8",
        "--lr",
        "1e-3,3e-3,1e-2",
        "--wd",
        "0.8",
    ]


def kill_after(out, data, log, n_starts, sig, env):
    """Start the tool, wait until the trainer has been started n_starts times in all, signal the group."""
    tool = subprocess.Popen(
        command(out, data),
        cwd=REPO,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while len(starts(log)) < n_starts and tool.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(tool.pid, sig)  # the whole group, as a terminal's Ctrl-C or a scheduler would
    _, err = tool.communicate(timeout=120)
    return tool.returncode, err


def finished(out):
    return {d.name for d in out.iterdir() if d.is_dir() and RunDir(str(d)).state() == rundir.FINISHED}


@pytest.mark.slow
def test_killed_search_resumes_and_trains_nothing_twice(tmp_path, fake_data, fake_trainer):
    out = tmp_path / "sweep"
    env = dict(os.environ, FAKE_SECONDS="1")
    rc, err = kill_after(out, fake_data, fake_trainer, 3, signal.SIGTERM, env)  # round 1: 2 done, 1 running
    assert rc == 128 + signal.SIGTERM and "the same command resumes" in err
    done_1 = finished(out)
    assert done_1 and {d.name for d in out.iterdir() if d.is_dir()} - done_1, "the kill should land mid-search"

    status = subprocess.run(
        [sys.executable, "tools/tune.py", "--status", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0 and "searching" in status.stdout and "left in this round" in status.stdout
    assert all(name in status.stdout for name in done_1)

    rc, _ = kill_after(out, fake_data, fake_trainer, len(starts(fake_trainer)) + 1, signal.SIGKILL, env)
    assert rc == -signal.SIGKILL
    done_2 = finished(out)

    again = subprocess.run(command(out, fake_data), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    cert = json.loads((out / "certificate.json").read_text())
    per_run = Counter(line.split()[0] for line in starts(fake_trainer))
    assert all(per_run[name] == 1 for name in done_1)  # read back, not retrained
    assert all(per_run[name] <= 2 for name in done_2 - done_1)
    assert all(n <= 3 for n in per_run.values())  # one start per kill at most
    assert len(per_run) == cert["points_evaluated"] + 1  # every run the certificate needs, once
    assert cert["centre"] == {"epochs": 8, "lr": 3e-3, "weight_decay": 0.8} and cert["certified"]
    assert "read back" in again.stdout


@pytest.mark.parametrize(
    "text",
    [
        '{"state": "certified", "optimum": {"lr": 1}, "loss": null}',
        '{"rounds": 5}',
        '{"state": "searching", "pending": [3, [1]]}',
    ],
)
def test_status_of_a_sweep_json_with_wrong_types_is_no_traceback(tmp_path, capsys, text):
    from megarecipe.cli.tune import main

    (tmp_path / "sweep.json").write_text(text)
    assert main(["--status", str(tmp_path)]) == 0
    assert f"== {tmp_path}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "grid,fragment",
    [
        (["--wd", "nan"], "--wd: nan is out of range"),
        (["--lr", "0,1e-3"], "--lr: 0.0 is out of range"),
        (["--epochs", "0,1"], "--epochs: 0 is out of range"),
    ],
)
def test_grids_out_of_range_are_one_line_before_any_run(tmp_path, capsys, grid, fragment):
    from megarecipe.cli.tune import main

    with pytest.raises(SystemExit) as info:
        main(["configs/tiny.yaml", "--out", str(tmp_path / "sweep"), *grid])
    err = capsys.readouterr().err
    assert info.value.code == 2 and fragment in err and err.count("\n") == 1
    assert not (tmp_path / "sweep").exists()
