"""logging.wandb: the same scalars as TensorBoard, the config and the facts, on rank 0; off by default."""

import glob
import sys
import time
import types

import pytest

from megarecipe.config import load_config, run_settings
from megarecipe.rundir import RunDir
from megarecipe.train.metrics import Writer


class FakeRun:
    def __init__(self, calls):
        self.calls = calls
        self.config = types.SimpleNamespace(update=lambda values, **kw: calls.append(("config", values)))

    def log(self, values, step):
        self.calls.append(("log", step, values))

    def finish(self):
        self.calls.append(("finish",))


@pytest.fixture
def fake_wandb(monkeypatch):
    calls = []
    module = types.ModuleType("wandb")

    def init(**kwargs):
        calls.append(("init", kwargs))
        return FakeRun(calls)

    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    return calls


def test_writer_sends_what_tensorboard_gets(tmp_path, fake_wandb):
    from megarecipe.train.wandb_writer import WandbWriter

    run = RunDir(str(tmp_path / "my-run"))
    cfg = load_config("configs/tiny.yaml", ["logging.wandb=true", "logging.wandb_project=p"])
    writer = Writer(run.tb, enabled=True, also=WandbWriter(run, cfg, resumed=False))
    writer.run_facts({"params": 10, "lr": 3e-3}, "model:\n  num_layers: 2\n")
    writer.scalars(3, {"train/loss": 2.5, "perf/mfu": 0.4})
    writer.close()
    kind, init = fake_wandb[0]
    run_id = run.info()["wandb_id"]
    assert kind == "init" and init["project"] == "p" and init["name"] == "my-run" and init["id"] == run_id
    assert init["dir"] == run.path and len(run_id) == 8
    assert ("config", {"config": {"model": {"num_layers": 2}}, "facts": {"params": 10, "lr": 3e-3}}) in fake_wandb
    assert ("log", 3, {"train/loss": 2.5, "perf/mfu": 0.4}) in fake_wandb
    assert fake_wandb[-1] == ("finish",)

    resumed = WandbWriter(run, cfg, resumed=True)  # a resumed run continues the same W&B run
    assert fake_wandb[-1][1]["id"] == run_id and fake_wandb[-1][1]["resume"] == "allow"
    resumed.close()


def test_other_ranks_send_nothing(tmp_path, fake_wandb):
    writer = Writer(str(tmp_path / "tb"), enabled=False, also=FakeRun(fake_wandb))
    writer.scalars(1, {"train/loss": 1.0})
    writer.close()
    assert fake_wandb == []


def test_off_by_default_and_not_a_setting_of_the_result():
    cfg = load_config("configs/tiny.yaml")
    assert cfg.logging.wandb is False
    assert "logging" not in run_settings(cfg)


def test_offline_run_is_written_under_the_run_dir(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from megarecipe.train.wandb_writer import WandbWriter

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = RunDir(str(tmp_path / "run"))
    cfg = load_config("configs/tiny.yaml", ["logging.wandb=true"])
    writer = Writer(run.tb, enabled=True, also=WandbWriter(run, cfg, resumed=False))
    writer.run_facts({"params": 10}, "model:\n  num_layers: 2\n")
    for step in (1, 2):
        writer.scalars(step, {"train/loss": 3.0 - step})
    writer.close()
    [offline] = glob.glob(str(tmp_path / "run" / "wandb" / "offline-run-*"))
    assert run.info()["wandb_id"] in offline
    [records] = glob.glob(offline + "/run-*.wandb")
    deadline = time.monotonic() + 60  # wandb's service process may still be writing the file after finish()
    while True:
        with open(records, "rb") as f:
            data = f.read()
        if (b"train/loss" in data and b"num_layers" in data) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert b"train/loss" in data and b"num_layers" in data  # the scalars and the config, for `wandb sync`
