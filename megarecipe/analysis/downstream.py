"""Downstream evaluation of a run or an ensemble through lm-eval, offline, and where its results go.

RUN/eval/<task>.json   lm-eval's results for that task (the latest evaluation of it; --limit is recorded)
RUN/eval/results.md    the table of every task evaluated so far, plus their average
RUN/tb/                eval/<task>/acc and eval/<task>/acc_norm (rundir.eval_tag), in an event file of their own
"""

from __future__ import annotations

import glob
import json
import os
import tempfile

from megarecipe import atomic, ensembledir, rundir
from megarecipe.analysis.report import MISSING, number
from megarecipe.analysis.runs import read_run
from megarecipe.analysis.tasks import check_tasks, write_task_dir

EVAL_DIR, TB_DIR = rundir.EVAL, rundir.TB
EVENTS_SUFFIX = ".downstream"  # the event file of these scalars, apart from the trainer's
METRICS = ("acc", "acc_norm")
TABLE_FILE = "results.md"


def evaluate(
    path: str,
    tasks: list[str],
    limit: int | None = None,
    batch_size: int = 16,
    device: str | None = None,
    max_resident: int = 4,
    log_samples: bool = False,
) -> dict:
    """Score PATH (run, export or ensemble dir) on TASKS with lm-eval; returns lm-eval's output dict."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from megarecipe.analysis.lm_eval_model import check_members, member_exports

    check_tasks(tasks)  # cheap checks first: a bad name must not wait for a model load
    check_members(member_exports(path))
    import lm_eval
    from lm_eval.tasks import TaskManager

    from megarecipe.analysis.lm_eval_model import MegarecipeLM

    model = MegarecipeLM(path, batch_size=batch_size, device=device, max_resident=max_resident)
    with tempfile.TemporaryDirectory() as task_dir:
        manager = TaskManager(include_path=write_task_dir(task_dir, tasks), include_defaults=False)
        return lm_eval.simple_evaluate(
            model=model, tasks=tasks, task_manager=manager, limit=limit, log_samples=log_samples
        )


def model_identity(path: str) -> list[list]:
    """What was scored: each member's export and its weights' size and modification time, so a result left by
    another set of members (an ensemble re-scored with more of them) or other weights is not taken as current."""
    from megarecipe.analysis.lm_eval_model import member_exports

    out = []
    for export in member_exports(path):
        st = os.stat(os.path.join(export, rundir.WEIGHTS))
        out.append([os.path.abspath(export), st.st_size, st.st_mtime_ns])
    return out


def task_summaries(output: dict) -> dict[str, dict]:
    """task -> {acc, acc_norm (when the task has it), n}."""
    out = {}
    for task, res in output["results"].items():
        row = {m: res[f"{m},none"] for m in METRICS if f"{m},none" in res}
        row["n"] = output.get("n-samples", {}).get(task, {}).get("effective")
        out[task] = row
    return out


def write_results(path: str, output: dict, limit: int | None = None) -> dict[str, dict]:
    """lm-eval's JSON per task, the TensorBoard scalars and the Markdown table; returns every stored task."""
    eval_dir = os.path.join(path, EVAL_DIR)
    os.makedirs(eval_dir, exist_ok=True)
    for task in output["results"]:
        per_task = {
            key: ({task: value[task]} if isinstance(value, dict) and task in value else value)
            for key, value in output.items()
            if key != "samples"
        }
        per_task["megarecipe"] = {"limit": limit, "source": os.path.abspath(path), "model": model_identity(path)}
        _write_json(os.path.join(eval_dir, f"{task}.json"), per_task)
        if "samples" in output and task in output["samples"]:
            _write_json(os.path.join(eval_dir, f"{task}.samples.json"), output["samples"][task])
    stored = read_results(path)
    _write_events(path, stored)
    atomic.write_text(
        os.path.join(eval_dir, TABLE_FILE), results_table(stored, title=os.path.basename(os.path.normpath(path)))
    )
    return stored


def read_results(path: str) -> dict[str, dict]:
    """Every task evaluated for PATH so far: task -> {acc, acc_norm, n, limit}."""
    out = {}
    for file in sorted(glob.glob(os.path.join(path, EVAL_DIR, "*.json"))):
        if file.endswith(".samples.json"):
            continue
        with open(file) as f:
            data = json.load(f)
        for task, row in task_summaries(data).items():
            row["limit"] = data.get("megarecipe", {}).get("limit")
            row["model"] = data.get("megarecipe", {}).get("model")
            out[task] = row
    return out


def _step(path: str) -> int:
    """Where the scalars go: the run's last step, or K for an ensemble (as its ensemble/val_loss)."""
    ens = ensembledir.listing(path)
    if os.path.isfile(ens):
        with open(ens) as f:
            return len(json.load(f).get("members", []))
    try:
        return read_run(path).final_step or 0
    except (ValueError, OSError):
        return 0


def _write_events(path: str, stored: dict[str, dict]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    tb = os.path.join(path, TB_DIR)
    for old in glob.glob(os.path.join(tb, f"*{EVENTS_SUFFIX}")):
        os.remove(old)  # one event file holds the latest result of every task
    writer = SummaryWriter(tb, filename_suffix=EVENTS_SUFFIX)
    step = _step(path)
    for task, row in stored.items():
        for metric in METRICS:
            if metric in row:
                writer.add_scalar(rundir.eval_tag(task, metric), row[metric], step)
    writer.close()


def results_table(stored: dict[str, dict], title: str = "") -> str:
    lines = ([f"### {title}", ""] if title else []) + ["| task | acc | acc_norm | items |", "|---|---|---|---|"]
    for task, row in stored.items():
        n = row.get("n")
        items = MISSING if n is None else f"{n}" + (" (limit)" if row.get("limit") else "")
        lines.append(f"| {task} | {number(row.get('acc'))} | {number(row.get('acc_norm'))} | {items} |")
    if stored:
        accs = [r["acc"] for r in stored.values() if "acc" in r]
        norms = [r.get("acc_norm", r.get("acc")) for r in stored.values()]
        lines.append(
            f"| average ({len(stored)} tasks) | {number(sum(accs) / len(accs))} | {number(sum(norms) / len(norms))} | |"
        )
        if any("acc_norm" not in r for r in stored.values()):
            lines.append("")
            lines.append("acc_norm average: tasks without acc_norm count with their acc.")
    return "\n".join(lines) + "\n"


def compare_table(paths: list[str], metric: str = "acc_norm") -> str:
    """Tasks down, runs across: METRIC (acc where a task has no acc_norm), and the average over the tasks that
    every column has."""
    columns = [(os.path.basename(os.path.normpath(p)) + ("*" if _stale(p) else ""), read_results(p)) for p in paths]
    tasks = sorted({t for _, stored in columns for t in stored})
    common = [t for t in tasks if all(t in stored for _, stored in columns)]
    lines = ["| task | " + " | ".join(name for name, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]

    def value(stored, task):
        row = stored.get(task)
        return None if row is None else row.get(metric, row.get("acc"))

    for task in tasks:
        lines.append(f"| {task} | " + " | ".join(number(value(s, task)) for _, s in columns) + " |")
    if common:
        lines.append(
            f"| average ({len(common)} common tasks) | "
            + " | ".join(number(sum(value(s, t) for t in common) / len(common)) for _, s in columns)
            + " |"
        )
    note = f"\n{metric}" + (" (acc for tasks without it)" if metric == "acc_norm" else "")
    if any(name.endswith("*") for name, _ in columns):
        note += (
            "\n* scored other weights (or other ensemble members) than the directory holds now; run "
            "tools/evaluate.py on it again"
        )
    return "\n".join(lines) + "\n" + note + "\n"


def _stale(path: str) -> bool:
    """Whether a stored result was scored on other exports than PATH has now (results from before this was
    recorded, without "model", are taken as they are)."""
    try:
        now = model_identity(path)
    except (ValueError, OSError):
        return True
    return any(row.get("model") not in (None, now) for row in read_results(path).values())


def _write_json(path: str, data) -> None:
    atomic.write_text(path, json.dumps(data, indent=1, default=str) + "\n")
