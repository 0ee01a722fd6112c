"""tools/zero_plan.py against the live engine: planned model-state bytes equal what DeepSpeed holds, and
--measure trains a candidate through the trainer (launch/direct) with the ds_config it wrote."""

import json

import pytest

from megarecipe.launch import direct
from tests.helpers import REPO, TINY, env

pytestmark = pytest.mark.slow


def test_planned_model_states_equal_engine_bytes_and_recompute_is_exact(tiny_data, tmp_path):
    # two ranks forked from the warm server, as torchrun would start them (the worker is a module with a main)
    result = direct.captured(
        [tiny_data, str(tmp_path), *TINY], 2, env(), str(REPO), 300, module="tests.distributed.zero_plan_worker"
    )
    assert result.returncode == 0, result.stderr[-4000:]
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for zero, figures in got["bytes"].items():
            assert figures["held"]["params"] > 0 and figures["held"]["optimizer"] > 0, zero
            assert figures["held"] == figures["planned"], (rank, zero)
        losses = got["losses"]
        assert losses["selective"] == pytest.approx(losses["none"], abs=1e-6)
        assert losses["full"] == pytest.approx(losses["none"], abs=1e-6)
    held = {z: got["bytes"][z]["held"] for z in got["bytes"]}
    assert held["zero1"]["optimizer"] < held["zero0"]["optimizer"]
    assert held["zero3"]["params"] < held["zero1"]["params"]


def test_measure_prints_the_table_and_trains_with_the_written_config(tiny_data, tmp_path, monkeypatch, capsys):
    from megarecipe.cli.zero_plan import main
    from megarecipe.config import load_config
    from megarecipe.preflight import check_run

    for key, value in env().items():
        monkeypatch.setenv(key, value)
    overrides = [o for o in TINY if not o.startswith("train.stop_after")] + [f"data.dir={tiny_data}"]
    best = tmp_path / "best.json"
    code = main(
        [
            "configs/tiny.yaml",
            *overrides,
            "--processes",
            "2",
            "--measure",
            "--out",
            str(tmp_path / "plan"),
            "--zero",
            "zero2",
            "--tp",
            "1",
            "--pp",
            "1",
            "--micro-batch",
            "4",
            "--recompute",
            "selective",
            "--steps",
            "2",
            "--write",
            str(best),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "meas tok/s" in out
    plan = json.loads((tmp_path / "plan" / "plan.json").read_text())
    (measured,) = [c["measured"] for c in plan["candidates"] if c["measured"]]
    assert measured.get("error") is None, measured
    assert measured["tokens_per_s"] > 0 and measured["step_seconds"] > 0
    assert measured["model_states_match"], (measured["ranks"], measured["planned_ranks"])
    assert (tmp_path / "plan" / "ds_configs" / "zero2.json").read_text() == best.read_text()
    ds = json.loads(best.read_text())
    assert ds["zero_optimization"]["stage"] == 2 and "train_batch_size" not in ds
    printed = out.strip().splitlines()[-1].split()
    assert f"parallel.ds_config={best}" in printed
    layout = check_run(load_config("configs/tiny.yaml", [*overrides, *printed]), world_size=2)
    assert (layout.zero_stage, layout.micro_batch_size) == (2, 4)
