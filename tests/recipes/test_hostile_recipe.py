"""tools/recipe.py under a hostile user (issue 24): every field of the recipe file is checked before the first
stage, and a call stopped by SIGTERM still counts its time in stages.json (and so in REPORT.md)."""
import json
import os
import time

import pytest

from megarecipe.cli.recipe import main
from tests.recipes.test_recipe import SLIVER, fake_recipe


@pytest.mark.parametrize("field,fragment", [
    ("regularized.certified.b.lr=nan", "regularized.certified.b.lr: nan is not a finite number > 0"),
    ("standard.certified.a.epochs=0", "standard.certified.a.epochs: 0 is not an integer >= 1"),
    ("regularized.weight_decay=[0.1,-1]", "regularized.weight_decay[1]: -1 is not a finite number >= 0"),
    ("downstream.tasks=[sciq,bogus]", "downstream.tasks[1]: 'bogus' is not a task with offline data"),
    ("distill.temperature=inf", "temperature in (0, inf)")])
def test_every_recipe_field_is_checked_before_the_first_stage(tmp_path, capsys, field, fragment):
    out = tmp_path / "out"
    assert main([SLIVER, field, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and fragment in err, err
    assert not out.exists()   # nothing started


def test_a_stage_stopped_by_sigterm_keeps_its_time(tmp_path, fake_data, fake_trainer, monkeypatch, capsys):
    from megarecipe.recipes import pipeline

    real = pipeline.launch

    def stopped(*args, **kwargs):   # the launcher's runs are live when SIGTERM arrives: it unwinds as SystemExit
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
    assert both["standard"]["wall_s"] == pytest.approx(first["wall_s"] + both["last_call"]["standard"]["wall_s"],
                                                       abs=0.11)
    assert os.path.isfile(out / "standard" / "a" / "run.json")
