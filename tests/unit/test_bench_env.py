"""The benchmarks' trainer environment: DeepSpeed must accept it on a GPU machine as on a CPU one."""

import os
import subprocess
import sys

import torch

from tests.helpers import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from bench_common import trainer_env  # noqa: E402


def test_deepspeed_takes_the_benchmarks_trainer_environment_with_and_without_a_gpu(monkeypatch):
    """An empty DS_ACCELERATOR (what the benchmarks set on a GPU) is a ValueError in DeepSpeed's import."""
    monkeypatch.setenv("DS_ACCELERATOR", "")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    gpu = trainer_env(PYTHONWARNINGS="ignore")
    assert gpu.get("DS_ACCELERATOR", "unset") != "" and gpu["PYTHONWARNINGS"] == "ignore"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert trainer_env()["DS_ACCELERATOR"] == "cpu"
    # on this machine DeepSpeed then detects its own accelerator (the CPU, without a GPU)
    done = subprocess.run(
        [sys.executable, "-c", "from deepspeed.accelerator import get_accelerator; get_accelerator()"],
        env={**gpu, "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
