"""perf/mfu's peak follows the precision in use."""

import pytest
import torch

from megarecipe.train import metrics


def test_gpu_peak_is_the_data_sheet_figure_for_the_precision(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    gpu = torch.device("cuda", 0)
    monkeypatch.setattr(metrics, "tf32_matmuls", lambda: False)
    assert metrics.peak_precision(gpu, bf16=True) == "bf16"
    assert metrics.peak_precision(gpu, bf16=False) == "fp32"
    monkeypatch.setattr(metrics, "tf32_matmuls", lambda: True)
    assert metrics.peak_precision(gpu, bf16=False) == "tf32"
    peaks = {p: metrics.device_peak_flops(gpu, p) for p in ("bf16", "tf32", "fp32")}
    assert peaks == metrics.GPU_PEAK["H100"]
    assert peaks["fp32"] < peaks["tf32"] < peaks["bf16"]


def test_cpu_peak_is_measured_and_fp32():
    cpu = torch.device("cpu")
    assert metrics.peak_precision(cpu, bf16=False) == "fp32"
    assert metrics.device_peak_flops(cpu, "fp32") > 0


def test_mfu_is_per_device():
    """The same global throughput on twice the devices is half the utilisation of each."""
    one = metrics.mfu(flops_per_token=6e6, tokens_per_sec=10_000, world_size=1, peak_per_device=1.2e11)
    two = metrics.mfu(flops_per_token=6e6, tokens_per_sec=10_000, world_size=2, peak_per_device=1.2e11)
    assert one == pytest.approx(0.5)
    assert two == pytest.approx(0.25)


def test_meter_divides_global_flops_by_world_size(monkeypatch):
    clock = iter([10.0, 10.5])
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: next(clock))
    meter = metrics.Meter(batch_tokens=4096, flops_per_token=1e6, world_size=2, peak_per_device=1e9)
    meter.start()
    tokens_per_sec, mfu = meter.stop()
    assert meter.seconds == pytest.approx(0.5)
    assert tokens_per_sec == pytest.approx(8192)
    assert mfu == pytest.approx(8192 * 1e6 / (2 * 1e9))


def test_flops_per_token_is_6n_plus_attention():
    """6 x (layer weights + output head) + 12 L h s, the count Megatron and torchtitan use."""
    from megarecipe.config import ModelConfig
    from megarecipe.model.size import count_params, flops_per_token

    m = ModelConfig(
        num_layers=2, hidden_size=64, ffn_hidden_size=176, num_attention_heads=4, num_query_groups=2, seq_len=64
    )
    _, non_embedding = count_params(m, 256)
    assert flops_per_token(m, 256) == 6 * (non_embedding + 256 * 64) + 12 * 2 * 64 * 64
