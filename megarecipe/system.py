"""Facts about this machine that several layers need."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
import threading
import time

from megarecipe.errors import UserError


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def has_cuda() -> bool:
    """torch's answer; on a machine with no NVIDIA driver the answer is no without importing torch (2 CPU-s,
    which a launcher's check before its ranks start, and a bad-input error, should not pay)."""
    if "torch" not in sys.modules and not any(os.path.exists(p) for p in _NVIDIA_DRIVER):
        return False
    import torch

    return torch.cuda.is_available()


_NVIDIA_DRIVER = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/nvidia0")


def check_device(text: str | None) -> str | None:
    """A --device value the tools can use: None (the default), cpu, or cuda[:N] where a GPU is; else a UserError
    (a ValueError) with one line."""
    if text is None:
        return None
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise UserError(f"--device {text!r} is not a device; use cpu or cuda (or cuda:N)") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise UserError(
            f"--device {text}: no such CUDA device here ({torch.cuda.device_count()} GPU(s)); pass "
            f"--device cpu or leave it out"
        )
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {text}: use cpu or cuda (or cuda:N)")
    return text


def since_start() -> dict | None:
    """This process's age and CPU time (user + system) in seconds: for a run, what starting it cost until now.
    None where /proc is not there."""
    try:
        with open("/proc/self/stat") as f:
            started = int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    times = os.times()
    return {
        "wall_s": round(time.clock_gettime(time.CLOCK_BOOTTIME) - started, 3),
        "cpu_s": round(times.user + times.system, 3),
    }


_stop_signals: list[int] = []


def watch_stop_signals() -> None:
    """Note SIGTERM (a scheduler's preemption, passed on by the launchers) and SIGUSR1 (Slurm's --signal) from
    now on. Called first thing by the trainer, so that a signal that comes while it starts is kept: the run then
    stops with a checkpoint after its first step instead of training to the end."""
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, lambda signum, frame: _stop_signals.append(signum))


def stop_requested() -> bool:
    return bool(_stop_signals)


def quiet_progress_bars() -> None:
    """Turn off the progress bars of lm-eval, datasets, transformers and huggingface_hub, in this process and
    the ones it starts. They all draw with tqdm, which reads TQDM_DISABLE when it is first imported: call this
    before anything imports them (a tool's main does)."""
    for name in ("TQDM_DISABLE", "HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS"):
        os.environ[name] = "1"


OWNER_PID = "MEGARECIPE_OWNER_PID"  # exported by the launcher scripts: the process this run belongs to
_PR_SET_PDEATHSIG = 1


def _started(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a live process, or None when it is gone (or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else (int(fields[1]), int(fields[19]))


def die_with_parent() -> None:
    """SIGTERM to this process when the one that started it exits, even on kill -9 (Linux's parent-death
    signal). SIGTERM, not SIGKILL: the trainer checkpoints at the next step boundary and exits."""
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if parent == 1:  # the parent was gone before the request
        os.kill(os.getpid(), signal.SIGTERM)


def owner_chain(owner: int) -> list[tuple[int, int]] | None:
    """This process's ancestors up to and including `owner`, each as (pid, start time); None when `owner` is
    not an ancestor (another host's pid, a Slurm step's, or an exported variable from an earlier shell)."""
    chain, pid = [], os.getppid()
    while pid > 1 and len(chain) < 64:
        seen = _started(pid)
        if seen is None:
            return None
        chain.append((pid, seen[1]))
        if pid == owner:
            return chain
        pid = seen[0]
    return None


def stop_with_launcher(poll_s: float = 0.5) -> None:
    """A rank stops (SIGTERM to itself) when the launcher that owns it is gone, kill -9 included.

    Its direct parent (torchrun's agent, DeepSpeed's node launcher) is covered by the parent-death signal;
    when MEGARECIPE_OWNER_PID names an ancestor (launchers/*.sh export their own pid), a daemon thread also
    watches every process between the rank and it (DeepSpeed's runner, the script), which the parent-death
    signal does not see: DeepSpeed's runner and node launcher outlive a killed script. Only under a launcher
    (LOCAL_RANK set): a trainer started by hand from a shell keeps running when that shell exits."""
    if "LOCAL_RANK" not in os.environ and OWNER_PID not in os.environ:
        return
    die_with_parent()
    try:
        owner = int(os.environ.get(OWNER_PID, ""))
    except ValueError:
        return
    chain = owner_chain(owner)
    if not chain:
        return

    def watch():
        while all((_started(pid) or (0, None))[1] == start for pid, start in chain):
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="stop-with-launcher", daemon=True).start()
