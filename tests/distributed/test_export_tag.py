"""export_hf --tag: a checkpoint consolidated offline at the run's own layout gives the trainer's export."""

import os

import pytest
import torch
from safetensors.torch import load_file

from megarecipe.cli.export_hf import main as export_hf
from tests.helpers import env, train

pytestmark = pytest.mark.slow


def test_a_checkpoint_exports_as_the_finished_run_does(tiny_data, tmp_path, monkeypatch, capsys):
    # 4 steps in all, tensor parallel over 2 ranks: the last checkpoint and RUN/export hold the same weights
    run, _ = train(
        tmp_path,
        "tp2",
        2,
        tiny_data,
        "parallel.tp=2",
        f"data.train_tokens={64 * 16 * 4 + 1}",
        "train.stop_after=null",
        "train.checkpoint_every=2",
    )
    for name, value in env().items():
        monkeypatch.setenv(name, value)
    assert export_hf([str(run), "--tag", "step00000002", "--out", str(tmp_path / "hf2")]) == 0
    assert export_hf([str(run), "--tag", "step00000004", "--out", str(tmp_path / "hf4")]) == 0
    assert export_hf([str(run), "--out", str(tmp_path / "hf")]) == 0
    capsys.readouterr()
    final, tagged = load_file(tmp_path / "hf" / "model.safetensors"), load_file(tmp_path / "hf4" / "model.safetensors")
    assert final.keys() == tagged.keys()
    assert all(torch.equal(final[k], tagged[k]) for k in final)
    earlier = load_file(tmp_path / "hf2" / "model.safetensors")
    assert not torch.equal(earlier["lm_head.weight"], final["lm_head.weight"])  # another step's weights
    assert os.path.isfile(tmp_path / "hf4" / "generation_config.json")

    assert export_hf([str(run), "--tag", "step00000003", "--out", str(tmp_path / "hf3")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --tag step00000003: no such checkpoint") and "\n" not in err
    os.remove(run / "checkpoints" / "step00000004" / "manifest.json")  # a save cut short
    assert export_hf([str(run), "--tag", "step00000004", "--out", str(tmp_path / "hf5")]) == 2
    err = capsys.readouterr().err.strip()
    assert "never completed" in err and "--tag step00000002" in err and "\n" not in err
