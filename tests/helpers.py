"""Helpers the tests share: launching tiny runs the way users do, reading what they wrote, writing fake runs."""

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from megarecipe.launch import direct, warm
from megarecipe.system import free_port

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


# A Llama small enough for a few steps a second on two cores.
TINY = [
    "model.num_layers=2",
    "model.hidden_size=64",
    "model.ffn_hidden_size=176",
    "model.num_attention_heads=4",
    "model.num_query_groups=2",
    "model.seq_len=64",
    "data.train_tokens=20000",
    "data.val_tokens=2048",
    "train.epochs=1",
    "train.global_batch_size=16",
    "train.micro_batch_size=4",
    "train.eval_every=4",
    "train.eval_batch_size=8",
    "train.progress=false",
    "optim.lr=3e-3",
    "optim.weight_decay=0.1",
    "optim.warmup_frac=0.1",
    "train.stop_after=8",
]


def env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu")


TRAINER = ("-m", "megarecipe.cli.train")


def torchrun(
    nproc: int,
    overrides: list[str],
    extra_env: dict | None = None,
    timeout: int = 400,
    program: tuple = TRAINER,
    cold: bool = False,
):
    """nproc=0: plain `python -m megarecipe.cli.train`, no launcher. The trainer starts warm (forked from the
    session's preloaded server, as the local pool starts runs) unless cold is asked for or the program is a
    script, not a module (`("-m", MODULE, ARGS...)`); cold runs go through torchrun, as a user's would."""
    run_env = {**env(), **(extra_env or {})}
    if not cold and program[0] == "-m" and warm.cold_reason([]) is None:  # a module: the trainer, or a wrapper
        return direct.captured(
            [*program[2:], "configs/tiny.yaml", *overrides],
            max(nproc, 1),
            run_env,
            str(REPO),
            timeout,
            module=program[1],
        )
    launcher = (
        [str(BIN / "torchrun"), "--nproc_per_node", str(nproc), "--master_port", str(free_port())]
        if nproc
        else [str(BIN / "python")]
    )
    cmd = [*launcher, *program, "configs/tiny.yaml", *overrides]
    return subprocess.run(cmd, cwd=REPO, env=run_env, capture_output=True, text=True, timeout=timeout)


def train(
    tmp_path,
    name: str,
    nproc: int,
    data_dir: str,
    *overrides: str,
    extra_env=None,
    check=True,
    program: tuple = TRAINER,
    cold: bool = False,
):
    run_dir = tmp_path / name
    result = torchrun(
        nproc, [*TINY, f"data.dir={data_dir}", f"run.dir={run_dir}", *overrides], extra_env, program=program, cold=cold
    )
    if check and result.returncode != 0:
        pytest.fail(f"{name} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return run_dir, result


@contextlib.contextmanager
def service(name: str, state, what: str):
    """A real service of the tests (tests/services/NAME.sh start|stop STATE): yields what `start` printed and
    stops exactly what it started. Skipped with the script's one-line reason when it exits 3 (cannot run here:
    not root, no apt-get); any other failure is an error."""
    script = str(REPO / "tests" / "services" / f"{name}.sh")
    started = subprocess.run(["bash", script, "start", str(state)], capture_output=True, text=True, timeout=600)
    if started.returncode == 3:
        pytest.skip((started.stderr.strip().splitlines() or [f"{name}.sh: cannot run {what} here"])[-1])
    assert started.returncode == 0, started.stderr
    try:
        yield started.stdout.strip()
    finally:
        subprocess.run(["bash", script, "stop", str(state)], capture_output=True, timeout=60)


def processes_of(run_dir) -> list[int]:
    """Pids of every process whose command line names run_dir (launchers and ranks alike)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if f"run.dir={run_dir}".encode() in f.read():
                    found.append(int(entry))
        except (OSError, ValueError):
            pass
    return found


def pid_parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def descendants(pid: int) -> list[int]:
    """Every live process below pid (a warm run's ranks carry the forkserver's command line, not the run's)."""
    parents = {int(e): pid_parent(int(e)) for e in os.listdir("/proc") if e.isdigit()}
    found, todo = [], [pid]
    while todo:
        here = todo.pop()
        kids = [p for p, parent in parents.items() if parent == here]
        found += kids
        todo += kids
    return found


def scalars(run_dir, tag: str) -> dict[int, float]:
    """Read with TensorBoard's own reader (through the tools' run reader): what a user's TensorBoard shows."""
    from megarecipe.analysis.runs import event_dir, read_scalars

    return read_scalars(event_dir(str(run_dir))).get(tag, {})


def losses(run_dir) -> list[float]:
    values = scalars(run_dir, "train/loss")
    return [values[s] for s in sorted(values)]


def write_run(path, facts=None, val=None, ensemble=None, extra=None, tb=True, purge_step=None):
    """Event files as the trainer writes them, with torch's own SummaryWriter (no code of ours involved).

    facts: run/<name> -> value at step 0; val: step -> val/loss; ensemble: K -> ensemble/val_loss;
    extra: tag -> {step: value}.
    """
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(log_dir=os.path.join(path, "tb") if tb else path, purge_step=purge_step)
    for name, v in (facts or {}).items():
        w.add_scalar(f"run/{name}", v, 0)
    w.add_text("run/config", "model: {}", 0)
    for step, v in (val or {}).items():
        w.add_scalar("val/loss", v, step)
        w.add_scalar("train/loss", v + 0.1, step)
    for k, v in (ensemble or {}).items():
        w.add_scalar("ensemble/val_loss", v, k)
    for tag, series in (extra or {}).items():
        for step, v in series.items():
            w.add_scalar(tag, v, step)
    w.close()
    return str(path)


def llama_params(hidden, mlp, heads, kv_heads, layers, vocab=128256):
    """Total parameters of the paper's Llama shapes: untied embeddings, no biases, RMSNorm weights."""
    head_dim = hidden // heads
    attention = 2 * hidden * hidden + 2 * hidden * kv_heads * head_dim
    per_layer = attention + 3 * hidden * mlp + 2 * hidden
    return layers * per_layer + hidden + 2 * vocab * hidden


PAPER_SIZES = {  # name -> total params, from the shapes in shared/paper-notes.md
    "150m": llama_params(512, 1792, 8, 8, 6),
    "300m": llama_params(768, 2688, 12, 12, 12),
    "600m": llama_params(1024, 3584, 16, 8, 24),
    "1.4b": llama_params(2048, 7168, 16, 8, 16),
}
PAPER_K_ASYMPTOTES = {"150m": 3.4949, "300m": 3.2730, "600m": 3.2122, "1.4b": 3.1740}


@contextlib.contextmanager
def tmpfs(path, size: str = "2m", read_only: bool = False):
    """A small file system of its own at `path` (a full disk, or a read-only one); skipped where mounting is not
    allowed (not root, or no mount namespace)."""
    os.makedirs(path, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({(done.stderr or done.stdout).strip()[:100]})")
    try:
        yield str(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def read_only(path) -> None:
    """Remount the tmpfs at `path` read-only (what a read-only share looks like)."""
    done = subprocess.run(["mount", "-o", "remount,ro", str(path)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot remount {path} read-only ({done.stderr.strip()[:100]})")
