"""One real search: tiny Llamas trained on real text through the local pool, ending with a certificate whose
losses are the runs' own."""

import json

import pytest

from megarecipe import rundir
from megarecipe.cli import tune
from megarecipe.rundir import RunDir

SHAPE = """
model: {{num_layers: 1, hidden_size: 32, ffn_hidden_size: 96, num_attention_heads: 2, num_query_groups: 1,
        seq_len: 32}}
data: {{dir: {data}, train_tokens: 4000, val_tokens: 1024}}
optim: {{lr: 1.0e-2, weight_decay: 0.1}}
train: {{epochs: 1, global_batch_size: 16, micro_batch_size: 16, eval_every: 100, eval_batch_size: 16,
        checkpoint_every: 0, progress: false}}
"""


@pytest.mark.slow
def test_tiny_search_ends_with_a_certificate(tmp_path, tiny_data, capsys):
    config = tmp_path / "tiny-search.yaml"
    config.write_text(SHAPE.format(data=tiny_data))
    out = tmp_path / "sweep"
    rc = tune.main(
        [
            str(config),
            "--out",
            str(out),
            "--parallel",
            "4",
            "--seed-early",
            "--epochs",
            "1",
            "--lr",
            "3e-3,1e-2",
            "--wd",
            "0.1,0.4",
        ]
    )
    printed = capsys.readouterr()
    assert rc == 0, printed.err + printed.out
    cert = json.loads((out / "certificate.json").read_text())
    assert cert["certified"] and len(cert["neighbours"]) == 2 and cert["seed_rerun"]["loss"] is not None
    for name, loss in [(cert["run"], cert["loss"])] + [(n["run"], n["loss"]) for n in cert["neighbours"]]:
        info = RunDir(str(out / name)).info()
        assert info["status"] == rundir.FINISHED and info["final"]["val_loss"] == loss
        assert (out / name / "train.log").read_text().count("finished at step") == 1
    assert all(n["margin"] >= 0 for n in cert["neighbours"])
    assert "| centre |" in (out / "certificate.md").read_text() and "val/loss" in printed.out
