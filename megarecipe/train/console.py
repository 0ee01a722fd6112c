"""What rank 0 prints while it trains: a plain line every train.log_every steps, and a bar on a terminal only.

  step 40/400 | loss 3.2104 | lr 2.97e-03 | grad 0.842 | 10.3k tok/s | MFU 41.9% | mem 1.21 GiB | 0:00:12 | ETA 0:01:48

The line goes to stdout as it is (no carriage return), so a batch job's log holds one line per report; the bar
(tqdm, on stderr) is drawn only when stderr is a terminal and train.progress is on.
"""

from __future__ import annotations

import datetime
import os
import resource
import sys
import time

import torch


def memory_bytes(device: torch.device) -> int:
    """The most CUDA memory this process's tensors have held (torch's max allocated); on CPU the resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # no /proc: the peak resident set, in KiB on Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(max(0.0, seconds))))


def _rate(tokens_per_sec: float) -> str:
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if tokens_per_sec >= size:
            return f"{tokens_per_sec / size:.1f}{unit}"
    return f"{tokens_per_sec:.0f}"


def log_line(
    step: int,
    total: int,
    loss: float,
    lr: float,
    grad_norm: float | None,
    tokens_per_sec: float,
    mfu: float,
    memory: int,
    elapsed: float,
    eta: float,
    val_loss: float | None = None,
) -> str:
    parts = [
        f"step {step}/{total}",
        f"loss {loss:.4f}",
        *([f"val {val_loss:.4f}"] if val_loss is not None else []),
        f"lr {lr:.2e}",
        f"grad {grad_norm:.3f}" if grad_norm is not None else "grad -",
        f"{_rate(tokens_per_sec)} tok/s",
        f"MFU {100 * mfu:.1f}%",
        f"mem {memory / 2**30:.2f} GiB",
        _clock(elapsed),
        f"ETA {_clock(eta)}",
    ]
    return " | ".join(parts)


class Console:
    """Rank 0's output during training; every method is a no-op on the other ranks."""

    def __init__(self, enabled: bool, total: int, start: int, end: int, bar: bool):
        self.enabled, self.total, self.start, self.end = enabled, total, start, end
        self.t0 = time.perf_counter()
        self.bar = None
        if enabled and bar and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True)

    def eta(self, step: int) -> tuple[float, float]:
        """(seconds since this process began training, seconds left to the last step it will run)."""
        elapsed = time.perf_counter() - self.t0
        done = step - self.start
        return elapsed, elapsed / done * (self.end - step) if done > 0 else 0.0

    def line(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stdout)
        else:
            print(text, flush=True)

    def advance(self, loss: float, val_loss: float | None) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.3f}", **({"val": f"{val_loss:.3f}"} if val_loss else {}))
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
