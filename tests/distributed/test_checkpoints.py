"""Damaged run directories, as a hostile user leaves them: every case is refused with one line naming what is
wrong and the complete checkpoint to resume from, and nothing already written is lost."""

import hashlib
import json
import os
import shutil
import time

import pytest
import torch

from megarecipe.rundir import RunDir
from megarecipe.train import checkpoint
from tests.helpers import REPO, TINY, env, losses, scalars, torchrun, train

pytestmark = pytest.mark.slow
STEPS = ["train.checkpoint_every=4", "train.stop_after=8", "parallel.ds_config=zero1"]


@pytest.fixture(scope="module")
def checkpointed(tiny_data, tmp_path_factory):
    """One process, checkpoints at steps 4 and 8, stopped at 8."""
    run_dir, _ = train(tmp_path_factory.mktemp("ckpt"), "run", 0, tiny_data, *STEPS)
    return run_dir


def snapshot(run_dir) -> dict:
    out = {}
    for root, _, files in os.walk(run_dir):
        for name in files:
            path = os.path.join(root, name)
            if name != "run.lock":
                out[os.path.relpath(path, run_dir)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


def damaged(checkpointed, tmp_path, damage):
    run_dir = tmp_path / "run"
    shutil.copytree(checkpointed, run_dir)
    damage(run_dir / "checkpoints")
    return run_dir, snapshot(run_dir)


def resume(tmp_path, tiny_data, *extra):
    return train(tmp_path, "run", 0, tiny_data, *STEPS, "run.resume=true", *extra, check=False)[1]


def one_line_error(result) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "damage,fragment,advice",
    [
        (lambda c: (c / "latest").write_text(""), "latest is empty", "run.resume_from=step00000008"),
        (
            lambda c: shutil.rmtree(c / "step00000008"),
            "names 'step00000008', which is not there",
            "run.resume_from=step00000004",
        ),
        (lambda c: (c / "latest").unlink(), "latest is missing", "run.resume_from=step00000008"),
    ],
)
def test_a_damaged_pointer_is_an_error_and_nothing_is_lost(checkpointed, tmp_path, tiny_data, damage, fragment, advice):
    run_dir, before = damaged(checkpointed, tmp_path, damage)
    line = one_line_error(resume(tmp_path, tiny_data))
    assert fragment in line and advice in line, line
    assert snapshot(run_dir) == before
    refused = train(tmp_path, "run", 0, tiny_data, *STEPS, check=False)[1]  # without resume: refused too
    assert "already holds a checkpoint" in one_line_error(refused)
    assert snapshot(run_dir) == before


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_truncated_checkpoint_file_is_named_with_the_older_tag(checkpointed, tmp_path, tiny_data):
    run_dir, before = damaged(
        checkpointed, tmp_path, lambda c: truncate(c / "step00000008" / "mp_rank_00_model_states.pt")
    )
    line = one_line_error(resume(tmp_path, tiny_data))
    assert "step00000008/mp_rank_00_model_states.pt" in line and "run.resume_from=step00000004" in line, line
    assert {k: v for k, v in snapshot(run_dir).items() if k != "run.json"} == {
        k: v for k, v in before.items() if k != "run.json"
    }

    # the advice works: resuming from the older tag gives the original run's losses
    result = resume(tmp_path, tiny_data, "run.resume_from=step00000004")
    assert result.returncode == 0, result.stderr[-3000:]
    assert losses(run_dir) == losses(checkpointed)
    assert scalars(run_dir, "val/loss") == scalars(checkpointed, "val/loss")


def test_a_missing_rank_file_is_refused(checkpointed, tmp_path, tiny_data):
    run_dir, before = damaged(checkpointed, tmp_path, lambda c: (c / "step00000008" / "trainer_rank0.pt").unlink())
    line = one_line_error(resume(tmp_path, tiny_data, "run.seed=7"))
    assert "trainer_rank0.pt is missing" in line and "run.resume_from=step00000004" in line, line


def test_a_changed_optimizer_setting_is_refused(checkpointed, tmp_path, tiny_data):
    run_dir, before = damaged(checkpointed, tmp_path, lambda c: None)
    line = one_line_error(resume(tmp_path, tiny_data, "optim.lr=1e-3", "optim.warmup_frac=0.2"))
    assert "optim.lr 0.003 -> 0.001" in line and "optim.warmup_frac 0.1 -> 0.2" in line, line
    assert snapshot(run_dir) == before


def test_rank_files_hold_plain_state(checkpointed):
    state = torch.load(checkpointed / "checkpoints" / "step00000008" / "trainer_rank0.pt", weights_only=True)
    assert state["step"] == 8 and state["resume_key"]["optim.lr"] == 3e-3


def test_run_json_holds_exact_facts_and_status(checkpointed):
    import json

    info = json.loads((checkpointed / "run.json").read_text())
    assert info["status"] == "stopped" and info["step"] == 8
    assert info["facts"]["lr"] == 3e-3 and info["facts"]["weight_decay"] == 0.1
    assert len(info["settings_sha256"]) == 64


def test_launch_check_refuses_an_existing_run_before_spawning(checkpointed, tiny_data, capsys):
    """What launchers/local.sh runs before it starts any process (here in-process: the same main)."""
    from megarecipe.cli.check_config import main as check_config

    argv = ["--world-size", "2", "configs/tiny.yaml", *TINY, *STEPS, f"data.dir={tiny_data}", f"run.dir={checkpointed}"]

    def refused(*extra) -> str:
        assert check_config([*argv, *extra]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        return lines[0]

    assert "already holds a checkpoint" in refused()
    assert "optim.lr 0.003 -> 0.001" in refused("run.resume=true", "optim.lr=1e-3")


def test_resume_from_an_older_tag_sets_the_newer_branch_aside(checkpointed, tmp_path, tiny_data):
    """run.resume_from=step00000004 on a run checkpointed at 4 and 8, killed before its next save: the next plain
    resume continues the branch from step 4 (not the step-8 checkpoint the user left), and step 8's files are
    kept, byte for byte, under checkpoints/abandoned/."""
    from megarecipe.launch import warm

    run_dir, before = damaged(checkpointed, tmp_path, lambda c: None)
    ckpt = run_dir / "checkpoints"
    args = [
        "configs/tiny.yaml",
        *TINY,
        *STEPS,
        f"data.dir={tiny_data}",
        f"run.dir={run_dir}",
        "run.resume=true",
        "train.stop_after=null",
    ]  # its next save would be step 8's
    log = tmp_path / "first.log"
    proc = warm.start([*args, "run.resume_from=step00000004"], env(), str(REPO), str(log))
    try:
        deadline = time.time() + 120
        while time.time() < deadline and json.loads((run_dir / "run.json").read_text())["status"] != "running":
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.02)
    finally:
        proc.kill()  # a crash before the resumed run saved anything
        proc.wait()
    output = log.read_text()
    assert "moved aside" in output and "step00000008" in output, output[-3000:]

    again = torchrun(0, [*args[1:], "train.stop_after=6"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "stopped at step 6/" in again.stdout, again.stdout[-2000:]  # from step 4: steps 5 and 6 trained
    assert (ckpt / "latest").read_text() == "step00000006"
    assert checkpoint.tags(str(ckpt)) == ["step00000004", "step00000006"]
    assert checkpoint.newest_complete(str(ckpt)) == "step00000006"
    assert RunDir(str(run_dir)).state() == "stopped"
    aside = list((ckpt / checkpoint.ABANDONED).glob("*/step00000008"))
    assert len(aside) == 1
    step8 = "checkpoints/step00000008/"
    assert snapshot(aside[0]) == {k[len(step8) :]: v for k, v in before.items() if k.startswith(step8)}
