"""TensorBoard from rank 0, throughput and MFU.

MFU is per device: the model FLOPs all ranks do together each second, over world size x one device's peak.
The model FLOPs of a token are megarecipe/model/size.py's flops_per_token (6N + attention, as Megatron and
torchtitan count them): recomputation and padding do not count, so MFU is the same for the same model and
throughput whatever the activation checkpointing.

The run's facts go into the event files as `run/*` scalars at step 0 (and the config as text and in the
HPARAMS view) for people browsing TensorBoard; tools read the exact facts from run.json (megarecipe/rundir.py).
"""

from __future__ import annotations

import time

import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from megarecipe import rundir

# Dense peak per GPU and precision (FLOP/s), from the vendors' data sheets (SXM parts; tf32 = fp32 matmuls on
# tensor cores, which torch uses when torch.backends.cuda.matmul.allow_tf32 is set). V100 has no bf16 or tf32:
# its fp16 tensor-core figure stands in.
GPU_PEAK = {
    "H200": {"bf16": 989e12, "tf32": 494.7e12, "fp32": 66.9e12},
    "H100": {"bf16": 989e12, "tf32": 494.7e12, "fp32": 66.9e12},
    "A100": {"bf16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
    "L40S": {"bf16": 362e12, "tf32": 183e12, "fp32": 91.6e12},
    "A10": {"bf16": 125e12, "tf32": 62.5e12, "fp32": 31.2e12},
    "V100": {"bf16": 125e12, "tf32": 125e12, "fp32": 15.7e12},
}
GPU_PEAK_BF16 = {name: peaks["bf16"] for name, peaks in GPU_PEAK.items()}


class Writer:
    """A SummaryWriter on rank 0 and a no-op elsewhere. `start_step` purges events a killed run wrote past
    its last checkpoint, so a resumed run leaves no duplicate steps. `also`: another writer (W&B) that gets
    the same scalars and the run's facts and config."""

    def __init__(self, log_dir: str, enabled: bool, start_step: int = 0, also=None):
        self.tb = SummaryWriter(log_dir=log_dir, purge_step=start_step or None) if enabled else None
        self.also = also if enabled else None

    def scalars(self, step: int, values: dict) -> None:
        if self.tb:
            for tag, value in values.items():
                self.tb.add_scalar(tag, value, step)
        if self.also:
            self.also.scalars(step, values)

    def run_facts(self, facts: dict, config_yaml: str) -> None:
        if not self.tb:
            return
        if self.also:
            import yaml

            self.also.run_facts(facts, yaml.safe_load(config_yaml))
        for tag, value in facts.items():
            self.tb.add_scalar(rundir.fact_tag(tag), float(value), 0)
        self.tb.add_text(rundir.CONFIG_TEXT, "```\n" + config_yaml + "\n```", 0)
        exp, ssi, sei = hparams(facts, {rundir.VAL_LOSS: float("nan")})
        for summary in (exp, ssi, sei):
            self.tb.file_writer.add_summary(summary)

    def flush(self) -> None:
        if self.tb:
            self.tb.flush()

    def close(self) -> None:
        if self.tb:
            self.tb.close()
        if self.also:
            self.also.close()


def mfu(flops_per_token: float, tokens_per_sec: float, world_size: int, peak_per_device: float) -> float:
    """Model FLOP utilisation per device: global tokens/s x FLOPs per token / (world size x peak)."""
    return flops_per_token * tokens_per_sec / (world_size * peak_per_device)


class Meter:
    """Tokens per second of one step (all ranks together) and per-device MFU against `peak_per_device` (the
    trainer passes the highest peak among its ranks, so a mixed cluster is not flattered)."""

    def __init__(self, batch_tokens: int, flops_per_token: float, world_size: int, peak_per_device: float):
        self.batch_tokens, self.flops_per_token = batch_tokens, flops_per_token
        self.world_size, self.peak = world_size, peak_per_device
        self.t0, self.seconds = 0.0, 0.0

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def stop(self) -> tuple[float, float]:
        """(tokens/s, MFU) of the step since start(); the step's seconds stay in `seconds`."""
        self.seconds = time.perf_counter() - self.t0
        tokens_per_sec = self.batch_tokens / self.seconds
        return tokens_per_sec, mfu(self.flops_per_token, tokens_per_sec, self.world_size, self.peak)


def peak_precision(device: torch.device, bf16: bool) -> str:
    """The matmul precision in use: bf16, tf32 (fp32 on tensor cores) or fp32."""
    if bf16:
        return "bf16"
    return "tf32" if device.type == "cuda" and tf32_matmuls() else "fp32"


def tf32_matmuls() -> bool:
    """Whether fp32 matmuls may run on tensor cores (torch.backends.cuda.matmul.allow_tf32)."""
    return bool(torch.backends.cuda.matmul.allow_tf32)


def device_peak_flops(device: torch.device, precision: str = "bf16") -> float:
    """Peak FLOP/s of this process's device at `precision` (bf16, tf32, fp32): the data-sheet figure on a
    known GPU, else a measured matmul rate (on CPU with this process's threads)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peaks in GPU_PEAK.items():
            if key in name:
                return peaks[precision]
    return measured_matmul_flops(device, precision)


def measured_matmul_flops(device: torch.device, precision: str = "bf16", n: int = 1024, seconds: float = 0.3) -> float:
    dtype = torch.bfloat16 if device.type == "cuda" and precision == "bf16" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm up
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 2 * n**3 * reps / (time.perf_counter() - start)
