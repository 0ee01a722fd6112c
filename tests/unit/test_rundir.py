"""The run-directory contract: run.json written atomically, the lock, and the states a reader sees."""

import json
import os
import re
import subprocess
import sys

import pytest

from megarecipe import rundir
from megarecipe.rundir import RunDir, RunDirError


def test_states_from_the_directory_alone(tmp_path):
    run = RunDir(tmp_path / "r")
    assert run.state() == rundir.NOT_STARTED
    with run.hold():
        run.update(status=rundir.RUNNING, facts={"lr": 3e-3})
        assert run.state() == rundir.RUNNING
        assert RunDir(run.path).locked()
    assert run.state() == rundir.INTERRUPTED  # says running, but nobody holds the lock
    run.update(status=rundir.FINISHED)
    assert run.state() == rundir.FINISHED
    assert run.info()["facts"]["lr"] == 3e-3  # exact, not float32


def test_a_resumed_run_is_running_while_it_holds_the_lock(tmp_path):
    run = RunDir(tmp_path / "r")
    for status in (rundir.FINISHED, rundir.FAILED, rundir.STOPPED):
        run.update(status=status)
        with run.hold():  # starting up: run.json is updated only once the checkpoint is loaded
            assert run.state() == rundir.RUNNING, status
        assert run.state() == status


def test_a_second_holder_is_refused(tmp_path):
    run = RunDir(tmp_path / "r")
    with run.hold():
        with pytest.raises(RunDirError, match="in use by another process"):
            with RunDir(run.path).hold():
                pass


def test_a_killed_holder_releases_the_lock(tmp_path):
    code = (
        "import os, sys; from megarecipe.rundir import RunDir; r = RunDir(sys.argv[1]); "
        "r.hold().__enter__(); r.update(status='running'); print('held', flush=True); os.kill(os.getpid(), 9)"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "r")], capture_output=True, timeout=60)
    run = RunDir(tmp_path / "r")
    assert run.info()["status"] == rundir.RUNNING and run.state() == rundir.INTERRUPTED


def test_damaged_run_json_is_one_line(tmp_path):
    run = RunDir(tmp_path)
    (tmp_path / rundir.RUN_JSON).write_text("{not json")
    with pytest.raises(RunDirError, match="unreadable.*move it aside"):
        run.info()


@pytest.mark.parametrize(
    "content, field",
    [
        ({"final": {"val_loss": "4.2", "step": 8}}, "final.val_loss"),
        ({"final": [4.2]}, "final"),
        ({"status": 3}, "status"),
        ({"step": "8"}, "step"),
        ({"final": {"val_loss": True}}, "final.val_loss"),
    ],
)
def test_a_run_json_field_of_the_wrong_type_is_one_line(tmp_path, content, field):
    """Readers (status, reports, fits) compare and format these fields; a hand-edited one fails here, named."""
    (tmp_path / rundir.RUN_JSON).write_text(json.dumps(content))
    with pytest.raises(RunDirError, match=f"{re.escape(field)} has the wrong type; move run.json aside"):
        RunDir(tmp_path).info()


def test_update_is_atomic_and_merges(tmp_path):
    run = RunDir(tmp_path)
    run.update(status="running", step=1)
    run.update(step=2)
    info = json.loads((tmp_path / rundir.RUN_JSON).read_text())
    assert info["status"] == "running" and info["step"] == 2
    assert [n for n in os.listdir(tmp_path) if "tmp" in n] == []


@pytest.mark.parametrize("name", ["x" * 300, "file/r"])
def test_a_run_dir_that_cannot_be_made_is_one_line(tmp_path, name):
    (tmp_path / "file").write_text("")
    run = RunDir(tmp_path / name)
    for use in (run.locked, lambda: run.hold().__enter__()):
        with pytest.raises(RunDirError, match="cannot be used .*; choose another run.dir"):
            use()


def test_build_dirs_are_each_builders_own(tmp_path):
    """Two builders of one OUT never share a build dir; a user's OUT.tmp is left alone; a dead builder's goes."""
    from megarecipe import atomic

    (tmp_path / "cache.tmp").mkdir()
    (tmp_path / "cache.tmp" / "mine").write_text("a user's folder")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / f"cache.tmp{dead.stdout.strip()}").mkdir()  # killed mid-build
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / f"cache.tmp{live.pid}").mkdir()  # another builder, still at work
        tmp = atomic.build_dir(str(tmp_path / "cache"))
        assert tmp == str(tmp_path / f"cache.tmp{os.getpid()}") and os.path.isdir(tmp)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            ["cache.tmp", f"cache.tmp{live.pid}", f"cache.tmp{os.getpid()}"]
        )
    finally:
        live.kill()
        live.wait()


def test_replace_dir_leaves_a_users_dot_old_alone(tmp_path):
    """`mv hf/model hf/model.old` as a backup, then export again to hf/model: the backup must survive."""
    from megarecipe import atomic

    final, tmp, backup = tmp_path / "model", tmp_path / "model.tmp", tmp_path / "model.old"
    for d, text in ((final, "current"), (tmp, "new"), (backup, "my backup")):
        d.mkdir()
        (d / "weights").write_text(text)
    atomic.replace_dir(str(tmp), str(final))
    assert (final / "weights").read_text() == "new" and (backup / "weights").read_text() == "my backup"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "model.old"]
