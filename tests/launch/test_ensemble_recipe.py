"""`ensemble.py train` / `status` through the launcher, with the fake trainer (tests/fake_trainer.py): members
differ only by run.seed, a killed or failed member is reported and resumed by the next `train`, finished ones
are never retrained. The real trainer runs in tests/distributed/test_train.py::test_ensemble_of_trained_members."""

import os
import signal
import subprocess
import sys
import time

import pytest

from megarecipe import rundir
from megarecipe.cli.ensemble import main
from megarecipe.recipes import ensemble
from megarecipe.rundir import RunDir
from tests.helpers import REPO
from tests.launch.conftest import starts

SETTINGS = ["optim.lr=3e-3", "optim.weight_decay=0.4", "train.epochs=4", "model.seq_len=64", "data.train_tokens=20000"]


def train(out, fake_data, *extra):
    return main(
        [
            "train",
            "tiny",
            "--members",
            "3",
            "--out",
            str(out),
            "--parallel",
            "2",
            f"data.dir={fake_data}",
            *SETTINGS,
            *extra,
        ]
    )


def test_members_differ_only_by_seed(fake_data, tmp_path):
    specs = ensemble.specs("tiny", [f"data.dir={fake_data}", *SETTINGS], str(tmp_path), 3)
    assert [s.run_dir for s in specs] == [ensemble.member_dir(str(tmp_path), i) for i in (1, 2, 3)]
    assert [s.overrides[-1] for s in specs] == ["run.seed=1", "run.seed=2", "run.seed=3"]
    assert len({tuple(s.overrides[:-1]) for s in specs}) == 1
    shifted = ensemble.specs("tiny", [f"data.dir={fake_data}", *SETTINGS], str(tmp_path), 1, member_shift=True)
    assert shifted[0].overrides[-3:] == ["train.epochs=8", "optim.weight_decay=0.2", "run.seed=1"]
    with pytest.raises(ensemble.EnsembleSetupError, match="run.seed=5: the ensemble sets run.seed"):
        ensemble.specs("tiny", ["run.seed=5"], str(tmp_path), 2)


def test_train_status_and_resume(fake_data, fake_trainer, tmp_path, capsys):
    out = tmp_path / "ens"
    assert train(out, fake_data) == 0
    assert sorted(line.split()[0] for line in starts(fake_trainer)) == ["seed1", "seed2", "seed3"]
    assert max(int(line.split()[1].split("=")[1]) for line in starts(fake_trainer)) <= 2  # --parallel 2
    assert RunDir(str(out)).info()["kind"] == "ensemble"
    assert [RunDir(ensemble.member_dir(str(out), i)).info()["facts"]["seed"] for i in (1, 2, 3)] == [1, 2, 3]

    # seed2 killed mid-training (run.json says running, nobody holds the lock), seed3 failed
    RunDir(ensemble.member_dir(str(out), 2)).update(status=rundir.RUNNING, step=4)
    RunDir(ensemble.member_dir(str(out), 3)).update(status=rundir.FAILED, error="RuntimeError: out of memory")
    capsys.readouterr()
    assert main(["status", str(out)]) == 0
    table = capsys.readouterr().out
    assert "seed1   finished" in table and "val/loss" in table
    assert "seed2   interrupted" in table and "resumes it" in table
    assert "seed3   failed       " in table and "RuntimeError: out of memory" in table and "1 of 3 finished" in table

    before = len(starts(fake_trainer))
    assert train(out, fake_data) == 0
    assert sorted(line.split()[0] for line in starts(fake_trainer)[before:]) == ["seed2", "seed3"]
    assert [s.state for s in ensemble.status(str(out))] == [rundir.FINISHED] * 3

    # more members than trained: the eval says how many are there and what to do
    capsys.readouterr()
    assert main(["eval", str(out), "--members", "5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--members 5 but the ensemble has 3" in err and err.count("\n") == 1


def test_status_of_nothing_is_one_line(tmp_path, capsys):
    assert main(["status", str(tmp_path / "none")]) == 2
    assert "no such ensemble directory" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("sig,group", [(signal.SIGTERM, False), (signal.SIGINT, True)])
def test_signals_to_the_tool_stop_its_members_with_a_checkpoint(fake_data, fake_trainer, tmp_path, sig, group):
    """`kill TOOL` (SIGTERM to the tool alone) and Ctrl-C (SIGINT to the terminal's whole process group): every
    member gets SIGTERM, checkpoints and stops; none trains on, and none dies of the SIGINT without a checkpoint."""
    out = tmp_path / "ens"
    live = os.environ["FAKE_LIVE"]
    cmd = [
        sys.executable,
        "tools/ensemble.py",
        "train",
        "tiny",
        "--members",
        "2",
        "--out",
        str(out),
        "--parallel",
        "2",
        f"data.dir={fake_data}",
        *SETTINGS,
    ]
    tool = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=dict(os.environ, FAKE_SECONDS="60", FAKE_TERM_STOPS="1"),
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # as in a terminal
    try:
        deadline = time.monotonic() + 60
        while len(starts(fake_trainer)) < 2 and tool.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        trainers = [int(p) for p in os.listdir(live)]
        assert len(trainers) == 2  # each handles SIGTERM from before its start is logged
        os.killpg(tool.pid, sig) if group else tool.send_signal(sig)
        try:
            _, err = tool.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the tool did not end within 90 s of {sig.name}: {_what_is_left(out, trainers)}")
        assert tool.returncode == 128 + sig and "the same command resumes" in err
        assert not [p for p in trainers if _alive(p)], "members kept training after the tool was stopped"
        assert RunDir(str(out)).info()["status"] == rundir.STOPPED
        assert [s.state for s in ensemble.status(str(out))] == [rundir.STOPPED] * 2
    finally:
        if tool.poll() is None:
            tool.kill()
        for p in [int(p) for p in os.listdir(live)]:
            if _alive(p):
                os.kill(p, signal.SIGKILL)


def _what_is_left(out, pids) -> str:
    """Which members still run, and the end of each member's log: what a hang needs to be understood."""
    alive = [p for p in pids if _alive(p)]
    logs = {log.parent.name: log.read_text().splitlines()[-3:] for log in sorted(out.glob("seed*/train.log"))}
    return f"members alive: {alive}; member logs: {logs}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_status_of_a_damaged_ensemble_run_json_is_one_line(tmp_path, capsys):
    out = tmp_path / "ens"
    RunDir(ensemble.member_dir(str(out), 1)).update(status=rundir.FINISHED)
    for text, fragment in (
        ('{"plan": 5', "run.json is unreadable"),
        ('{"plan": {"members": 7}}', "1 of 1 finished"),
        ('{"plan": "x"}', "1 of 1 finished"),
    ):
        (out / "run.json").write_text(text)
        code = main(["status", str(out)])
        got = capsys.readouterr()
        assert fragment in got.out + got.err and "Traceback" not in got.err
        assert code == (2 if "unreadable" in fragment else 0)


def test_fewer_members_than_an_earlier_call_is_finished_when_they_are(
    fake_data, fake_trainer, tmp_path, capsys, monkeypatch
):
    """seed3 of an earlier `--members 3` failed; `--members 2` is done once seeds 1 and 2 are (it said to run the
    same command again, which could never help)."""
    out = tmp_path / "ens"
    monkeypatch.setenv("FAKE_FAIL", "seed3")
    assert train(out, fake_data, "--retries", "0") == 1
    capsys.readouterr()
    assert main(["train", "tiny", "--members", "2", "--out", str(out), f"data.dir={fake_data}", *SETTINGS]) == 0
    assert f"eval {out} --members 2" in capsys.readouterr().out
    spaced = str(tmp_path / "an ensemble")  # the next step is a command to paste: quoted
    assert main(["train", "tiny", "--members", "1", "--out", spaced, f"data.dir={fake_data}", *SETTINGS]) == 0
    assert f"eval '{spaced}'" in capsys.readouterr().out
