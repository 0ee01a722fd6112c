"""Paths a hostile (or unlucky) user gives: one real path for the check and the write, never a user's folder lost."""

import json
import os

from tests.helpers import REPO


def _trap(tmp_path):
    """link -> deep/a; `link/../victim` is deep/victim to the OS but tmp/victim to a normalised path."""
    (tmp_path / "deep" / "a").mkdir(parents=True)
    os.symlink(tmp_path / "deep" / "a", tmp_path / "link")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.tex").write_text("years of work")
    return f"{tmp_path}/link/../victim", victim


def test_export_hf_through_a_symlink_leaves_the_users_folder(tiny_run, tmp_path, capsys):
    from megarecipe.cli.export_hf import main

    out, victim = _trap(tmp_path)
    assert main([tiny_run, "--out", out]) == 0
    assert (victim / "thesis.tex").read_text() == "years of work"
    assert os.path.isfile(tmp_path / "deep" / "victim" / "config.json")  # where the OS resolves it


def test_export_hf_refuses_a_users_folder_reached_through_a_symlink(tiny_run, tmp_path, capsys):
    from megarecipe.cli.export_hf import main

    out, victim = _trap(tmp_path)
    (tmp_path / "deep" / "victim").mkdir()
    (tmp_path / "deep" / "victim" / "notes.txt").write_text("mine")
    assert main([tiny_run, "--out", out]) == 2
    assert "no Hugging Face export of ours" in capsys.readouterr().err
    assert (tmp_path / "deep" / "victim" / "notes.txt").read_text() == "mine"
    assert (victim / "thesis.tex").read_text() == "years of work"


def test_a_run_dir_inside_a_finished_run_is_refused_before_training(tiny_run, tmp_path, capsys):
    from megarecipe.cli.train import main

    with open(os.path.join(tiny_run, "run.json"), "w") as f:
        json.dump({"kind": "train", "status": "finished"}, f)
    config = os.path.join(tiny_run, "export", "config.yaml")
    before = open(config).read()
    code = main([str(REPO / "configs" / "tiny.yaml"), f"run.dir={tiny_run}/export", "data.dir=/nonexistent"])
    err = capsys.readouterr().err
    assert code == 2 and "lies inside the run" in err and err.count("\n") == 1
    assert open(config).read() == before
    os.remove(os.path.join(tiny_run, "run.json"))
