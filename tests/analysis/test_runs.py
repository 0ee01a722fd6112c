import csv
import math
import os

import pytest

from megarecipe.analysis.runs import RunReadError, format_table, read_run, read_runs, read_scalars, write_csv

FACTS = dict(
    params=1431373824,
    params_non_embedding=906037248,
    train_tokens=209715200,
    epochs=8,
    lr=3e-3,
    weight_decay=3.2,
    seed=7,
    global_batch_tokens=262144,
    total_steps=800,
)


def test_reads_facts_and_the_final_val_loss(tmp_path, make_run):
    run = make_run(tmp_path / "reg-1.4b", FACTS, val={200: 4.1, 400: 3.7, 800: 3.25, 600: 3.4})
    rec = read_run(run)
    assert rec.name == "reg-1.4b" and rec.path == run
    assert rec.params == 1431373824 and isinstance(rec.params, int)  # float32 on disk, an int again
    assert rec.params_non_embedding == 906037248
    assert rec.train_tokens == 209715200 and rec.global_batch_tokens == 262144 and rec.total_steps == 800
    assert rec.lr == 3e-3 and rec.weight_decay == 3.2 and rec.epochs == 8 and rec.seed == 7
    assert rec.final_step == 800 and rec.final_val_loss == pytest.approx(3.25, abs=1e-6)
    assert rec.ensemble_losses == {}


def test_events_directly_in_the_run_dir(tmp_path, make_run):
    run = make_run(tmp_path / "flat", {"params": 150e6}, val={10: 3.9}, tb=False)
    rec = read_run(run)
    assert rec.final_val_loss == pytest.approx(3.9) and rec.params == 150_000_000
    assert read_run(os.path.join(run)).name == "flat"


def test_the_tb_dir_itself_is_named_after_its_run(tmp_path, make_run):
    run = make_run(tmp_path / "std-300m", {"params": 3e8}, val={10: 3.9})
    assert read_run(os.path.join(run, "tb")).name == "std-300m"


def test_ensemble_losses_by_member_count(tmp_path, make_run):
    run = make_run(
        tmp_path / "ens-300m",
        {"params": 299649792, "train_tokens": 209715200},
        ensemble={k: 3.27 + 0.25 / k for k in (1, 2, 3, 4, 5)},
    )
    rec = read_run(run)
    assert list(rec.ensemble_losses) == [1, 2, 3, 4, 5]
    assert rec.ensemble_losses[4] == pytest.approx(3.27 + 0.0625, abs=1e-6)
    assert rec.final_val_loss is None


def test_a_resumed_run_keeps_the_last_written_values(tmp_path, make_run):
    run = tmp_path / "resumed"
    make_run(run, FACTS, val={200: 4.0, 400: 3.8, 600: 3.7})
    # killed after 600, resumed from a step-400 checkpoint: purge_step drops the stale 600
    make_run(run, {}, val={600: 3.6, 800: 3.5}, purge_step=401)
    rec = read_run(str(run))
    assert rec.final_step == 800 and rec.final_val_loss == pytest.approx(3.5)
    assert rec.params == FACTS["params"]
    series = read_scalars(os.path.join(run, "tb"))["val/loss"]
    assert series[600] == pytest.approx(3.6) and series[400] == pytest.approx(3.8)


def test_a_duplicate_final_step_keeps_the_later_file(tmp_path, make_run):
    run = tmp_path / "dup"
    make_run(run, {"params": 1e8}, val={100: 3.9})
    make_run(run, {}, val={100: 3.8})
    assert read_run(str(run)).final_val_loss == pytest.approx(3.8)


def test_more_than_ten_thousand_scalars_are_all_kept(tmp_path, make_run):
    steps = range(1, 12_001)
    run = make_run(tmp_path / "long", {"params": 1e8}, extra={"val/loss": {s: 10.0 - s * 1e-4 for s in steps}})
    series = read_scalars(os.path.join(run, "tb"))["val/loss"]
    assert len(series) == 12_000
    assert read_run(run).final_val_loss == pytest.approx(10.0 - 1.2)


@pytest.mark.parametrize(
    "setup, reason",
    [
        ("missing", "not a directory"),
        ("empty", "no TensorBoard event files"),
        ("train_only", "no final validation loss"),
        ("nan", "final val/loss is nan"),
        ("inf", "final val/loss is inf"),
        ("unfinished", "unfinished: last val/loss at step 400 of 800"),
        ("ensemble_nan", "not finite at K = 3"),
    ],
)
def test_unusable_runs_are_named_with_a_reason(tmp_path, make_run, setup, reason):
    path = tmp_path / setup
    if setup == "empty":
        path.mkdir()
    elif setup == "train_only":
        make_run(path, FACTS, extra={"train/loss": {1: 5.0, 2: 4.0}})
    elif setup in ("nan", "inf"):
        make_run(path, FACTS, val={400: 3.9, 800: float(setup)})
    elif setup == "unfinished":
        make_run(path, FACTS, val={200: 3.9, 400: 3.8})
    elif setup == "ensemble_nan":
        make_run(path, {"params": 1e8}, ensemble={1: 3.5, 2: 3.4, 3: math.nan})
    with pytest.raises(RunReadError, match=reason):
        read_run(str(path))


def test_read_runs_separates_good_from_bad(tmp_path, make_run):
    good = [make_run(tmp_path / f"reg-{i}", {"params": (i + 1) * 1e8}, val={10: 4.0 - i * 0.1}) for i in range(3)]
    bad = make_run(tmp_path / "reg-nan", {"params": 5e8}, val={10: math.nan})
    (tmp_path / "reg-empty").mkdir()
    records, problems = read_runs(good[:2] + [bad, str(tmp_path / "reg-empty"), good[2]])
    assert [r.name for r in records] == ["reg-0", "reg-1", "reg-2"]
    assert [os.path.basename(p) for p, _ in problems] == ["reg-nan", "reg-empty"]
    assert "nan" in problems[0][1] and "no TensorBoard event files" in problems[1][1]


def test_a_corrupt_event_file_is_reported_not_raised(tmp_path):
    run = tmp_path / "corrupt" / "tb"
    run.mkdir(parents=True)
    (run / "events.out.tfevents.1.host").write_bytes(b"\x00" * 5 + b"garbage" * 50)
    records, problems = read_runs([str(tmp_path / "corrupt")])
    assert records == [] and len(problems) == 1


def test_table_and_csv(tmp_path, make_run):
    recs = [
        read_run(make_run(tmp_path / "ens-150m", {"params": 154147328, "lr": 3e-3}, ensemble={1: 3.7, 2: 3.6})),
        read_run(make_run(tmp_path / "reg-150m", FACTS, val={800: 3.5})),
    ]
    text = format_table(recs)
    assert "ens-150m" in text and "1:3.7000 2:3.6000" in text and "0.003" in text
    write_csv(recs, tmp_path / "runs.csv")
    rows = list(csv.DictReader((tmp_path / "runs.csv").read_text().splitlines()))
    assert rows[1]["name"] == "reg-150m" and rows[1]["params"] == "1431373824"
    assert float(rows[1]["final_val_loss"]) == pytest.approx(3.5) and rows[0]["final_val_loss"] == ""
