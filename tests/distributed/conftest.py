"""Multi-process training runs over gloo, launched the way users launch them."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# A Llama small enough for a few steps a second on two cores.
TINY = ["model.num_layers=2", "model.hidden_size=64", "model.ffn_hidden_size=176", "model.num_attention_heads=4",
        "model.num_query_groups=2", "model.seq_len=64", "data.train_tokens=20000", "data.val_tokens=2048",
        "train.epochs=1", "train.global_batch_size=16", "train.micro_batch_size=4", "train.eval_every=4",
        "train.eval_batch_size=8", "train.progress=false", "optim.lr=3e-3", "optim.weight_decay=0.1",
        "optim.warmup_frac=0.1", "train.stop_after=8"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict:
    e = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu")
    e.pop("MEGARECIPE_INJECT_NAN_AT_STEP", None)
    return e


def torchrun(nproc: int, overrides: list[str], extra_env: dict | None = None, timeout: int = 400):
    """nproc=0: plain `python -m megarecipe.train`, no launcher."""
    launcher = [str(BIN / "torchrun"), "--nproc_per_node", str(nproc), "--master_port", str(free_port())] \
        if nproc else [str(BIN / "python")]
    cmd = [*launcher, "-m", "megarecipe.train", "configs/tiny.yaml", *overrides]
    return subprocess.run(cmd, cwd=REPO, env={**env(), **(extra_env or {})}, capture_output=True, text=True,
                          timeout=timeout)


def train(tmp_path, name: str, nproc: int, data_dir: str, *overrides: str, extra_env=None, check=True):
    run_dir = tmp_path / name
    result = torchrun(nproc, [*TINY, f"data.dir={data_dir}", f"run.dir={run_dir}", *overrides], extra_env)
    if check and result.returncode != 0:
        pytest.fail(f"{name} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return run_dir, result


def scalars(run_dir, tag: str) -> dict[int, float]:
    """Read with TensorBoard's own reader (through the tools' run reader): what a user's TensorBoard shows."""
    from megarecipe.recipes.runs import event_dir, read_scalars

    return read_scalars(event_dir(str(run_dir))).get(tag, {})


def losses(run_dir) -> list[float]:
    values = scalars(run_dir, "train/loss")
    return [values[s] for s in sorted(values)]
