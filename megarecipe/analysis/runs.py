"""Run directories read into records for the fits and reports.

The exact facts and the status come from RUN/run.json (megarecipe/rundir.py); the curves - `val/loss` over steps,
an ensemble's `ensemble/val_loss` with step = K members averaged - from the TensorBoard events in RUN/tb (or
directly in RUN), read with tensorboard's own EventAccumulator. Run dirs from before run.json existed are
read from their events alone (facts as float32 `run/*` scalars at step 0).
"""

from __future__ import annotations

import csv
import glob
import logging
import math
import os
from dataclasses import dataclass, field

from megarecipe import errors, rundir
from megarecipe.rundir import RunDir, RunDirError

# facts as event scalars come back from float32: counts are rounded to int, values to 7 significant digits
COUNTS = ("params", "params_non_embedding", "train_tokens", "seed", "global_batch_tokens", "total_steps")
VALUES = ("epochs", "lr", "weight_decay")


class RunReadError(errors.UserError):
    """A run directory that cannot be used; the message says why, in one line."""


@dataclass
class RunRecord:
    path: str
    name: str
    params: int | None = None  # total, embeddings included (of one member, for an ensemble)
    params_non_embedding: int | None = None
    train_tokens: int | None = None  # unique-token budget D
    epochs: float | None = None
    lr: float | None = None
    weight_decay: float | None = None
    seed: int | None = None
    global_batch_tokens: int | None = None
    total_steps: int | None = None
    final_val_loss: float | None = None  # val/loss at the largest step
    final_step: int | None = None
    ensemble_losses: dict = field(default_factory=dict)  # K -> ensemble/val_loss
    status: str | None = None  # run.json's status; None for a run dir without one
    heldout: tuple | None = None  # (data contents sha256, val tokens) val/loss was measured on, where recorded


def event_dir(path: str) -> str:
    """RUN/tb when it exists, else RUN itself."""
    tb = RunDir(path).tb
    return tb if os.path.isdir(tb) else path


def run_name(path: str) -> str:
    path = os.path.normpath(path)
    base = os.path.basename(path)
    return os.path.basename(os.path.dirname(path)) if base == rundir.TB else base


def read_scalars(tb_dir: str) -> dict:
    """tag -> {step: value}; of duplicate steps (a resumed run) the last written wins."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(tb_dir, size_guidance={"scalars": 0})
    log = logging.getLogger("tensorboard")
    level = log.level
    log.setLevel(logging.ERROR)  # its purge notice for resumed runs is expected here, not news
    try:
        acc.Reload()
    finally:
        log.setLevel(level)
    out = {}
    for tag in acc.Tags().get("scalars", []):
        series = {}
        for ev in acc.Scalars(tag):  # in the order written, files sorted by name (= time)
            series[int(ev.step)] = float(ev.value)
        out[tag] = series
    return out


def _fact(series: dict | None):
    if not series:
        return None
    return series[min(series)]  # written once at step 0


def _run_json(path: str) -> dict:
    """run.json of RUN (or of RUN when given RUN/tb); {} for a run dir from before run.json existed."""
    base = os.path.dirname(os.path.normpath(path)) if os.path.basename(os.path.normpath(path)) == rundir.TB else path
    try:
        return RunDir(base).info() or {}
    except RunDirError as e:
        raise RunReadError(str(e)) from None


def read_run(path: str) -> RunRecord:
    """Read one run directory; raises RunReadError when it has no events, no final loss, or a non-finite one."""
    if not os.path.isdir(path):
        raise RunReadError("not a directory")
    info = _run_json(path)
    tb = event_dir(path)
    if not glob.glob(os.path.join(tb, "*tfevents*")):
        raise RunReadError(f"no TensorBoard event files (looked in {tb})")
    scalars = read_scalars(tb)
    rec = RunRecord(path=path, name=run_name(path), status=info.get("status"))
    heldout = info.get("heldout")
    if isinstance(heldout, dict):
        rec.heldout = (heldout.get("data_sha256"), heldout.get("val_tokens"))
    exact = info.get("facts") or {}
    for key in COUNTS:
        v = exact.get(key, _fact(scalars.get(rundir.fact_tag(key))))
        setattr(rec, key, None if v is None or not math.isfinite(v) else int(round(v)))
    for key in VALUES:
        v = exact.get(key)
        if v is None:
            v = _fact(scalars.get(rundir.fact_tag(key)))
            # float32 storage: 3e-3 comes back as 0.0030000000260...; 7 significant digits restore it
            v = None if v is None or not math.isfinite(v) else float(f"{v:.7g}")
        setattr(rec, key, v)
    if scalars.get(rundir.VAL_LOSS):
        val = scalars[rundir.VAL_LOSS]
        rec.final_step = max(val)
        rec.final_val_loss = val[rec.final_step]
    final = info.get("final") or {}
    if final.get("val_loss") is not None and final.get("step") == rec.final_step:
        rec.final_val_loss = final["val_loss"]  # the exact value; the event holds it as float32
    rec.ensemble_losses = dict(sorted(scalars.get(rundir.ENSEMBLE_VAL_LOSS, {}).items()))
    check(rec)
    return rec


def check(rec: RunRecord) -> None:
    if rec.final_val_loss is None and not rec.ensemble_losses:
        raise RunReadError(f"no final validation loss (no {rundir.VAL_LOSS} or {rundir.ENSEMBLE_VAL_LOSS} scalars)")
    if rec.final_val_loss is not None and not math.isfinite(rec.final_val_loss):
        raise RunReadError(f"final {rundir.VAL_LOSS} is {rec.final_val_loss} (step {rec.final_step})")
    bad = [k for k, v in rec.ensemble_losses.items() if not math.isfinite(v)]
    if bad:
        raise RunReadError(f"{rundir.ENSEMBLE_VAL_LOSS} is not finite at K = {', '.join(map(str, bad))}")
    if rec.status not in (None, rundir.FINISHED):
        raise RunReadError(f"unfinished: run.json says {rec.status}")
    if rec.final_val_loss is not None and rec.total_steps and rec.final_step < rec.total_steps:
        raise RunReadError(f"unfinished: last {rundir.VAL_LOSS} at step {rec.final_step} of {rec.total_steps}")


def read_runs(paths) -> tuple[list[RunRecord], list[tuple[str, str]]]:
    """Read every directory; returns (records, problems), a problem being (path, why it was left out)."""
    records, problems = [], []
    for path in paths:
        try:
            records.append(read_run(path))
        except RunReadError as e:
            problems.append((path, str(e)))
        except Exception as e:  # a corrupt event file: say which directory, keep going
            problems.append((path, f"unreadable events: {type(e).__name__}: {e}"))
    return records, problems


COLUMNS = (
    "name",
    "params",
    "params_non_embedding",
    "train_tokens",
    "epochs",
    "lr",
    "weight_decay",
    "seed",
    "final_val_loss",
    "final_step",
    "ensemble_losses",
    "path",
)


def _cell(rec: RunRecord, col: str) -> str:
    v = getattr(rec, col)
    if v is None:
        return ""
    if col == "ensemble_losses":
        return " ".join(f"{k}:{loss:.4f}" for k, loss in v.items())
    if col == "final_val_loss":
        return f"{v:.4f}"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def table_rows(records: list[RunRecord]) -> list[list[str]]:
    return [[_cell(r, c) for c in COLUMNS] for r in records]


def format_table(records: list[RunRecord]) -> str:
    cols = [c for c in COLUMNS if c != "path"]
    rows = [[_cell(r, c) for c in cols] for r in records]
    widths = [max(len(c), *(len(row[i]) for row in rows)) if rows else len(c) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def write_csv(records: list[RunRecord], path: str) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        w.writerows(table_rows(records))


def check_same_heldout(records: list[RunRecord]) -> None:
    """Losses measured on different held-out tokens are not comparable: refuse to fit or compare them together
    (runs that do not record theirs, written before run.json had it, are taken as they are)."""
    first = next((r for r in records if r.heldout), None)
    other = next((r for r in records if r.heldout and r.heldout != first.heldout), None)
    if other:

        def said(r):
            return f"{r.name} (data {str(r.heldout[0])[:12]}, {r.heldout[1]} val tokens)"

        raise RunReadError(
            f"val/loss of {said(first)} and {said(other)} were measured on different held-out tokens; "
            f"fit runs trained and evaluated on one data dir with one data.val_tokens"
        )
