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


def quiet_progress_bars() -> None:
    """Turn off the progress bars of lm-eval, datasets, transformers and huggingface_hub, in this process and
    the ones it starts. They all draw with tqdm, which reads TQDM_DISABLE when it is first imported: call this
    before anything imports them (a tool's main does)."""
    import os

    for name in ("TQDM_DISABLE", "HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS"):
        os.environ[name] = "1"
