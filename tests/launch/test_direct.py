"""megarecipe.launch.direct through a stand-in tool (direct_tool.py) and job (direct_job.py): where the ranks'
output goes, which signals reach every rank, and the tool's exit status, warm and cold."""

import os
import pty
import signal
import subprocess
import sys

import pytest

from tests.helpers import REPO

TOOL = [sys.executable, "-m", "tests.launch.direct_tool"]
STOP_LINE = "stopped by SIGTERM; the same command with run.resume=true continues from its checkpoint"


def _env(warm: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), MEGARECIPE_WARM="1" if warm else "0")
    env.pop("MEGARECIPE_TRAINER", None)
    env["CUDA_VISIBLE_DEVICES"] = ""  # no GPUs: the warm tests start warm on any machine
    return env


def _ready(proc, ranks: int) -> list[str]:
    lines = []
    while sum(line.startswith("ready") for line in lines) < ranks:
        line = proc.stdout.readline()
        assert line, f"the tool ended before its ranks were ready: {lines}"
        lines.append(line.strip())
    return lines


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
def test_output_to_a_file_and_the_rank_exit_status(tmp_path, warm):
    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "w") as o, open(err, "w") as e:
        o.write("before\n")
        o.flush()
        code = subprocess.run(
            [*TOOL, "1", "exit", "3"], stdout=o, stderr=e, env=_env(warm), cwd=REPO, timeout=120
        ).returncode
    assert code == 3
    assert out.read_text().split() == ["before", "out", "0"]  # appended at the tool's offset, not over it
    assert err.read_text().split() == ["err", "0"]


def test_two_warm_ranks_write_to_the_tools_pipe(tmp_path):
    r = subprocess.run([*TOOL, "2", "exit", "0"], capture_output=True, text=True, env=_env(True), cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.split("\n")[:2]) == ["out 0", "out 1"]
    assert sorted(r.stderr.split("\n")[:2]) == ["err 0", "err 1"]


def test_a_warm_rank_writes_to_the_tools_tty():
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen([*TOOL, "1", "exit", "0"], stdout=follower, stderr=follower, env=_env(True), cwd=REPO)
        os.close(follower)
        assert proc.wait(timeout=120) == 0
        text = b""
        while True:
            try:
                chunk = os.read(leader, 1024)
            except OSError:  # EIO: the tty has no writer left
                break
            if not chunk:
                break
            text += chunk
    finally:
        os.close(leader)
    assert text.split() == [b"out", b"0", b"err", b"0"]


@pytest.mark.parametrize("warm,ranks", [(True, 2), (False, 1)], ids=["warm", "cold"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_term_and_int_reach_every_rank_and_exit_128_plus_n(sig, warm, ranks):
    proc = subprocess.Popen(
        [*TOOL, str(ranks), "wait"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(warm), cwd=REPO
    )
    try:
        _ready(proc, ranks)
        proc.send_signal(signal.SIGUSR1)  # passed on; the ranks carry on
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, err
    assert sorted(line for line in out.split("\n") if line) == sorted(
        [f"usr1 {r}" for r in range(ranks)] + [f"stopped {r}" for r in range(ranks)]
    )
    assert err.strip().splitlines()[-1] == STOP_LINE.replace("SIGTERM", signal.Signals(sig).name)


def test_a_warm_rank_killed_by_a_signal_exits_128_plus_n():
    proc = subprocess.Popen(
        [*TOOL, "1", "wait"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(True), cwd=REPO
    )
    try:
        os.kill(int(_ready(proc, 1)[-1].split()[2]), signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGKILL


def test_a_warm_job_exits_with_the_failed_rank_status_not_that_of_the_peers_it_stopped():
    """Rank 1 fails first; rank 0 is then killed by the SIGTERM sent to the peers: the job's status is rank 1's,
    not the -15 of the lower rank."""
    from megarecipe.launch import warm

    job = warm.start(
        ["last-fails", "5"],
        _env(True),
        str(REPO),
        os.devnull,
        os.devnull,
        processes=2,
        module="tests.launch.direct_job",
    )
    try:
        assert job.wait(60) == 5
    finally:
        job.kill()


@pytest.mark.parametrize("lands", ["signal", "ctrl-c"])
def test_a_signal_or_ctrl_c_while_the_warm_job_is_reaped_finds_its_status(lands):
    """The tool's forwarding handler (send_signal), or Ctrl-C and then LocalPool's stop() (poll), may run while
    poll() closes the ranks' process objects, which raise once closed: the status is set before, so neither
    raises. Plain forked processes stand in for the forkserver's ranks (no training stack is imported)."""
    import multiprocessing

    from megarecipe.launch.warm import WarmRun

    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=sys.exit, args=(3,)) for _ in range(2)]
    for p in procs:
        p.start()
    job = WarmRun(procs)
    close = procs[0].close

    def closing():
        close()
        if lands == "signal":
            job.send_signal(signal.SIGTERM)
        else:
            raise KeyboardInterrupt

    procs[0].close = closing
    if lands == "signal":
        assert job.wait(30) == 3
    else:
        with pytest.raises(KeyboardInterrupt):
            job.wait(30)
        assert job.poll() == 3
        job.send_signal(signal.SIGTERM)


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
def test_captured_output_status_and_timeout(warm, monkeypatch, tmp_path):
    """direct.captured (the planner's measurements): both ranks' stdout and stderr apart, the job's status, and a
    job past its timeout killed and raised as TimeoutExpired."""
    from megarecipe.launch import direct

    env = _env(warm)
    for key in ("MEGARECIPE_WARM", "MEGARECIPE_TRAINER", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.setenv(key, env[key]) if key in env else monkeypatch.delenv(key, raising=False)
    barrier = [] if warm else [str(tmp_path)]  # torchrun stops a rank that has not printed yet once one fails
    got = direct.captured(["exit", "4", *barrier], 2, env, str(REPO), 120, module="tests.launch.direct_job")
    assert got.returncode == (4 if warm else 1)  # torchrun's own status when a rank fails
    assert sorted(w for w in got.stdout.split() if w in ("out", "0", "1")) == ["0", "1", "out", "out"]
    assert "err" in got.stderr and "out" not in got.stderr
    with pytest.raises(subprocess.TimeoutExpired):
        direct.captured(["wait"], 1, env, str(REPO), 3, module="tests.launch.direct_job")
