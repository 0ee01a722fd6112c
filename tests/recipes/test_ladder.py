"""The ladder in process, with a synthetic launcher (no processes): sizes in order each start from the previous
optimum, one search per budget, and the fits over parameters and over tokens land in report.md."""

import json
import math
import os
from pathlib import Path

from megarecipe import rundir
from megarecipe.cli import tune
from megarecipe.launch import RunResult
from megarecipe.recipes import sweep
from megarecipe.rundir import RunDir

OPT_LR = {64: 1e-2, 128: 3e-3, 256: 1e-3}  # larger models want a lower LR


def fake_launch(calls):
    def launch(specs, on_done=None, **kw):
        results = {}
        calls.append([s.name for s in specs])
        for s in specs:
            o = dict(a.split("=", 1) for a in s.overrides)
            h, d, lr, wd = (
                int(Path(s.config).stem[1:]),
                int(o.get("data.train_tokens", 20000)),
                float(o["optim.lr"]),
                float(o["optim.weight_decay"]),
            )
            params = 24 * h * h + 4096 * h
            loss = (
                2
                + 50 / math.sqrt(params)
                + 30 / d**0.3
                + math.log10(lr / OPT_LR[h]) ** 2
                + 0.1 * math.log2((wd + 0.1) / 0.9) ** 2
                + 1e-4 * (int(o["run.seed"]) % 3)
            )
            RunDir(s.run_dir).update(
                status=rundir.FINISHED,
                step=1,
                final={"val_loss": loss, "step": 1},
                facts={"params": params, "train_tokens": d, "lr": lr},
            )
            results[s.run_dir] = RunResult(s.name, s.run_dir, rundir.FINISHED, loss)
            if on_done:
                on_done(results[s.run_dir])
        return results

    return launch


def test_ladder_over_sizes_and_budgets(tmp_path, fake_data, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(sweep, "launch", fake_launch(calls))
    configs = []
    for h in (64, 128, 256):
        path = tmp_path / f"h{h}.yaml"
        path.write_text(
            f"data:\n  dir: {fake_data}\nmodel:\n  hidden_size: {h}\n  ffn_hidden_size: {3 * h}\n"
            f"optim:\n  lr: 1.0e-2\n  weight_decay: 0.4\n"
        )
        configs.append(str(path))
    out = tmp_path / "ladder"
    rc = tune.main(
        [
            "--ladder",
            ",".join(configs),
            "--tokens",
            "20k,40k,80k",
            "--out",
            str(out),
            "--epochs",
            "2",
            "--wd",
            "0.4,0.8,1.6",
            "--bootstrap",
            "0",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    planned = json.loads((out / "ladder.json").read_text())["planned"]
    assert planned == [f"h{h}_D{d}" for d in ("20k", "40k", "80k") for h in (64, 128, 256)]
    for d in ("20k", "40k", "80k"):
        certs = [json.loads((out / f"h{h}_D{d}" / "certificate.json").read_text()) for h in (64, 128, 256)]
        assert [c["centre"]["lr"] for c in certs] == [1e-2, 3e-3, 1e-3]
        assert all(c["centre"]["weight_decay"] == 0.8 and c["certified"] for c in certs)
        for h, prev in ((128, certs[0]), (256, certs[1])):  # each size starts at the previous size's optimum
            rounds = json.loads((out / f"h{h}_D{d}" / "sweep.json").read_text())["rounds"]
            assert rounds[0]["centre"] == prev["centre"]
    report = (out / "report.md").read_text()
    assert "## Certificates" in report and report.count("Verdict: locally optimal") == 9
    assert "Loss over parameters" in report and "Loss over tokens" in report
    assert os.path.exists(out / "fit_params.png") and os.path.exists(out / "fit_tokens.png")
    status = tune.main(["--status", str(out)])
    text = capsys.readouterr().out
    assert status == 0 and text.count("certified") >= 9


def test_seed_early_runs_the_second_seed_with_each_round(tmp_path, fake_data, monkeypatch):
    calls = []
    monkeypatch.setattr(sweep, "launch", fake_launch(calls))
    config = tmp_path / "h128.yaml"
    config.write_text(f"data:\n  dir: {fake_data}\n  train_tokens: 20000\noptim:\n  lr: 3.0e-2\n")
    grid = sweep.paper_grid(epochs=[2], weight_decay=[0.8])
    cert = sweep.Sweep(str(config), str(tmp_path / "s"), [], grid, log=lambda line: None, seed_early=True).run()
    assert cert["centre"]["lr"] == 3e-3 and cert["certified"] and cert["seed_rerun"]["loss"] is not None
    # rounds at lr 3e-2, 1e-2, 3e-3: each batch holds its centre's seed-1235 run; the last one is read back
    assert [b[-1] for b in calls[:3]] == [f"lr{lr}_wd0.8_ep2_s1235" for lr in ("3e-2", "1e-2", "3e-3")]
    assert len(calls) == 4 and calls[3] == ["lr3e-3_wd0.8_ep2_s1235"] and cert["runs"] == 4 + 3
