"""tools/recipe.py and tools/tune.py under a hostile user (issue 24): every field of the recipe file is checked
before the first stage, a call stopped by SIGTERM still counts its time in stages.json (and so in REPORT.md), and
tune's --status and grids are one line when wrong. The stand-in trainer runs, should a check let something by."""

import json
import os
import time

import pytest

from megarecipe.cli.recipe import main
from tests.recipes.test_recipe import SLIVER, fake_recipe


@pytest.mark.parametrize(
    "field,fragment",
    [
        ("regularized.certified.b.lr=nan", "regularized.certified.b.lr: nan is not a finite number > 0"),
        ("standard.certified.a.epochs=0", "standard.certified.a.epochs: 0 is not an integer >= 1"),
        ("regularized.weight_decay=[0.1,-1]", "regularized.weight_decay[1]: -1 is not a finite number >= 0"),
        ("downstream.tasks=[sciq,bogus]", "downstream.tasks[1]: 'bogus' is not a task with offline data"),
        ("distill.temperature=inf", "temperature in (0, inf)"),
    ],
)
def test_every_recipe_field_is_checked_before_the_first_stage(
    tmp_path, capsys, fake_data, fake_trainer, field, fragment
):
    out = tmp_path / "out"
    assert main([SLIVER, *fake_recipe(fake_data), field, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and fragment in err, err
    assert not out.exists()  # nothing started


def test_every_size_s_run_settings_are_checked_before_the_first_stage(tmp_path, capsys, fake_data, fake_trainer):
    bad = tmp_path / "bad.yaml"  # size a's runs would be refused only when the standard stage starts them
    bad.write_text(open(SLIVER).read().replace("model.hidden_size=16,", "model.hidden_size=18,"))
    out = tmp_path / "out"
    assert main([str(bad), *fake_recipe(fake_data), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: sizes a (standard run): model.hidden_size=18") and err.count("\n") == 1, err
    assert not out.exists()  # no stage ran


def test_a_stage_stopped_by_sigterm_keeps_its_time(tmp_path, fake_data, fake_trainer, monkeypatch, capsys):
    from megarecipe.recipes import pipeline

    real = pipeline.launch

    def stopped(*args, **kwargs):  # the launcher's runs are live when SIGTERM arrives: it unwinds as SystemExit
        time.sleep(1.5)
        raise SystemExit(143)

    out = tmp_path / "out"
    argv = [SLIVER, *fake_recipe(fake_data), "--out", str(out), "--stop-after", "standard"]
    monkeypatch.setattr(pipeline, "launch", stopped)
    assert main(argv) == 143
    first = json.loads((out / "stages.json").read_text())["standard"]
    assert first["wall_s"] >= 1.5 and first["did_work"]
    monkeypatch.setattr(pipeline, "launch", real)
    assert main(argv) == 0
    both = json.loads((out / "stages.json").read_text())
    assert both["standard"]["wall_s"] == pytest.approx(
        first["wall_s"] + both["last_call"]["standard"]["wall_s"], abs=0.11
    )
    assert os.path.isfile(out / "standard" / "a" / "run.json")


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_tune_status_of_a_file_or_a_damaged_sweep_json(tmp_path, capsys):
    from megarecipe.cli.tune import main

    (tmp_path / "notes.txt").write_text("hi")
    assert main(["--status", str(tmp_path / "notes.txt")]) == 2
    assert "is a file" in _one_line(capsys)
    assert main(["--status", str(tmp_path / "missing")]) == 2
    assert "does not exist" in _one_line(capsys)
    (tmp_path / "sweep.json").write_text('{"state": "sear')  # killed mid-write by hand, or a disk error
    assert main(["--status", str(tmp_path)]) == 2
    err = _one_line(capsys)
    assert f"{tmp_path}/sweep.json is unreadable" in err and "same tune command" in err


def test_tune_grid_values_that_name_one_run_dir(tmp_path, capsys, fake_data, fake_trainer):
    from megarecipe.cli.tune import main

    with pytest.raises(SystemExit) as info:
        main(
            [
                "configs/tiny.yaml",
                f"data.dir={fake_data}",
                "--out",
                str(tmp_path / "sweep"),
                "--lr",
                "1e-3,1.0000001e-3",
            ]
        )
    err = _one_line(capsys)
    assert info.value.code == 2 and "0.001 and 0.0010000001 both read 1e-3" in err
    assert not (tmp_path / "sweep").exists()
