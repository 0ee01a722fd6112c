"""A rank stops (SIGTERM to itself) when the launcher that owns it is gone: megarecipe.system.stop_with_launcher.
Tiny processes (bash and a Python that imports only megarecipe.system), not a trainer."""

import os
import signal
import subprocess
import sys
import time

from tests.helpers import REPO

# The "rank": notes SIGTERM in a file and exits, as the trainer checkpoints and exits.
RANK = """
import os, signal, sys, time
from megarecipe.system import stop_with_launcher
def stop(signum, frame):
    open(sys.argv[1], "w").write("term")
    os._exit(0)
signal.signal(signal.SIGTERM, stop)
stop_with_launcher(poll_s=0.1)
open(sys.argv[1] + ".up", "w").write(str(os.getpid()))
time.sleep(60)
"""


def start(tmp_path, owner_is_outer: bool):
    """outer bash -> inner bash -> rank; MEGARECIPE_OWNER_PID is the outer bash's pid (as launchers/local.sh
    exports its own) or, when not owner_is_outer, a pid that is no ancestor of the rank."""
    flag = tmp_path / "flag"
    owner = "$$" if owner_is_outer else "1234567"
    inner = f"{sys.executable} -c '{RANK}' {flag} & wait"
    outer = subprocess.Popen(
        ["bash", "-c", f'export MEGARECIPE_OWNER_PID={owner}; bash -c "$0" & wait', inner],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "LOCAL_RANK": "0"},
    )
    deadline = time.time() + 30
    while not (tmp_path / "flag.up").exists() or not (tmp_path / "flag.up").read_text():
        assert time.time() < deadline and outer.poll() is None, "the rank did not start"
        time.sleep(0.05)
    return outer, flag


def rank_pid(flag) -> int:
    return int((flag.parent / "flag.up").read_text())


def test_rank_stops_when_its_launcher_is_killed(tmp_path):
    outer, flag = start(tmp_path, owner_is_outer=True)
    outer.send_signal(signal.SIGKILL)  # the inner bash, the rank's parent, lives on: only the watch sees it
    outer.wait()
    deadline = time.time() + 5
    while not flag.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert flag.exists() and flag.read_text() == "term"


def test_rank_ignores_an_owner_that_is_not_its_ancestor(tmp_path):
    outer, flag = start(tmp_path, owner_is_outer=False)
    pid = rank_pid(flag)
    try:
        outer.send_signal(signal.SIGKILL)
        outer.wait()
        time.sleep(0.5)
        assert not flag.exists()
    finally:
        os.kill(pid, signal.SIGKILL)


def test_rank_stops_when_its_parent_is_killed(tmp_path):
    outer, flag = start(tmp_path, owner_is_outer=False)  # no watched owner: the parent-death signal alone
    inner = [
        int(p) for p in subprocess.run(["pgrep", "-P", str(outer.pid)], capture_output=True, text=True).stdout.split()
    ]
    assert len(inner) == 1
    os.kill(inner[0], signal.SIGKILL)
    deadline = time.time() + 5
    while not flag.exists() and time.time() < deadline:
        time.sleep(0.05)
    outer.kill()
    outer.wait()
    assert flag.exists() and flag.read_text() == "term"
