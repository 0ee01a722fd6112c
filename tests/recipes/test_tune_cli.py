"""tools/tune.py as a user runs it, with the stand-in trainer: killed mid-search and started again, it trains
nothing twice and ends with the same certificate; --status shows what ran and what is left."""
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
    return [sys.executable, "tools/tune.py", "configs/tiny.yaml", "--out", str(out), "--parallel", "2",
            f"data.dir={data}", "data.train_tokens=100000", "--epochs", "8", "--lr", "1e-3,3e-3,1e-2",
            "--wd", "0.8"]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_search_resumes_and_trains_nothing_twice(tmp_path, fake_data, fake_trainer, sig):
    out = tmp_path / "sweep"
    env = dict(os.environ, FAKE_SECONDS="1")
    tool = subprocess.Popen(command(out, fake_data), cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(starts(fake_trainer)) < 3 and tool.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(tool.pid, sig)        # the whole group, as a terminal's Ctrl-C or a scheduler would
    _, err = tool.communicate(timeout=120)
    assert tool.returncode != 0
    if sig == signal.SIGTERM:
        assert tool.returncode == 128 + signal.SIGTERM and "the same command resumes" in err
    runs = [d for d in out.iterdir() if d.is_dir()]
    finished_before = {d.name for d in runs if RunDir(str(d)).state() == rundir.FINISHED}
    unfinished = {d.name for d in runs} - finished_before
    assert finished_before and unfinished, "the kill should land mid-search"

    status = subprocess.run([sys.executable, "tools/tune.py", "--status", str(out)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and "searching" in status.stdout and "left in this round" in status.stdout
    assert all(name in status.stdout for name in finished_before | unfinished)

    again = subprocess.run(command(out, fake_data), cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    cert = json.loads((out / "certificate.json").read_text())
    per_run = Counter(line.split()[0] for line in starts(fake_trainer))
    assert all(per_run[name] == 1 for name in finished_before)          # read back, not retrained
    assert all(per_run[name] <= 2 for name in unfinished)               # restarted once at most
    assert len(per_run) == cert["points_evaluated"] + 1                 # every run the certificate needs, once
    assert cert["centre"] == {"epochs": 8, "lr": 3e-3, "weight_decay": 0.8} and cert["certified"]
    assert "read back" in again.stdout
