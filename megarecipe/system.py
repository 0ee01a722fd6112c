"""Facts about this machine that several layers need."""
from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def check_device(text: str | None) -> str | None:
    """A --device value the tools can use: None (the default), cpu, or cuda[:N] where a GPU is; else ValueError
    with one line."""
    if text is None:
        return None
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise ValueError(f"--device {text!r} is not a device; use cpu or cuda (or cuda:N)") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"--device {text}: no such CUDA device here ({torch.cuda.device_count()} GPU(s)); pass "
                         f"--device cpu or leave it out")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {text}: use cpu or cuda (or cuda:N)")
    return text


def since_start() -> dict | None:
    """This process's age and CPU time (user + system) in seconds: for a run, what starting it cost until now.
    None where /proc is not there."""
    import os
    import time

    try:
        with open("/proc/self/stat") as f:
            started = int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    times = os.times()
    return {"wall_s": round(time.clock_gettime(time.CLOCK_BOOTTIME) - started, 3),
            "cpu_s": round(times.user + times.system, 3)}


_stop_signals: list[int] = []


def watch_stop_signals() -> None:
    """Note SIGTERM (a scheduler's preemption, passed on by the launchers) and SIGUSR1 (Slurm's --signal) from
    now on. Called first thing by the trainer, so that a signal that comes while it starts is kept: the run then
    stops with a checkpoint after its first step instead of training to the end."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, lambda signum, frame: _stop_signals.append(signum))


def stop_requested() -> bool:
    return bool(_stop_signals)


def quiet_progress_bars() -> None:
    """Turn off the progress bars of lm-eval, datasets, transformers and huggingface_hub, in this process and
    the ones it starts. They all draw with tqdm, which reads TQDM_DISABLE when it is first imported: call this
    before anything imports them (a tool's main does)."""
    import os

    for name in ("TQDM_DISABLE", "HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS"):
        os.environ[name] = "1"
