"""perf/mfu's peak follows the precision in use."""
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
