"""Communication per device per optimizer step (ring collectives: an all-reduce moves 2(n-1)/n of the data,
a reduce-scatter or all-gather (n-1)/n), and a rough step time to rank layouts by."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from megarecipe.config import ModelConfig
from megarecipe.model.size import flops_per_token
from megarecipe.plan.memory import ZeroSetting


@dataclass
class Comm:
    data_parallel: int  # bytes: gradient reduction, ZeRO parameter gathers
    tensor_parallel: int  # bytes: activation all-reduces inside each layer
    pipeline: int  # bytes: activations and their gradients between stages
    offload: int  # bytes over PCIe to and from host memory

    @property
    def total(self) -> int:
        return self.data_parallel + self.tensor_parallel + self.pipeline + self.offload

    def as_dict(self) -> dict:
        return {**asdict(self), "total": self.total}


def comm_volume(
    m: ModelConfig,
    z: ZeroSetting,
    local_params: int,
    tp: int,
    pp: int,
    dp: int,
    micro_batch: int,
    microbatches: int,
    recompute: str,
    bf16: bool,
) -> Comm:
    b = 2 if bf16 else 4
    ring = (dp - 1) / dp
    if z.stage == 0:
        data = 2 * ring * local_params * b
    elif z.stage in (1, 2):
        data = 2 * ring * local_params * b  # reduce-scatter gradients + all-gather updated parameters
    else:  # gradients reduce-scattered once, parameters gathered for every microbatch's forward and backward
        data = ring * local_params * b * (1 + 2 * microbatches)
    activation = micro_batch * m.seq_len * m.hidden_size * b
    layers = m.num_layers // pp
    tp_allreduces = 6 if recompute == "full" else 4  # 2 forward + 2 backward (+2 in the recompute)
    tensor = tp_allreduces * 2 * (tp - 1) / tp * activation * layers * microbatches if tp > 1 else 0
    pipe = 2 * activation * microbatches if pp > 1 else 0
    offload = 0
    if z.offload_optimizer:
        offload += local_params // dp * (4 + b)  # gradient partition out, updated parameters back
    if z.offload_params:
        offload += local_params // dp * b * 2 * microbatches
    return Comm(int(data), int(tensor), int(pipe), int(offload))


@dataclass
class Machine:
    peak_flops: float  # per device, at the precision in use
    efficiency: float  # achieved fraction of peak for the model's matmuls
    intra_bw: float  # bytes/s per device within a node
    inter_bw: float  # bytes/s per device across nodes
    pcie_bw: float  # bytes/s per device to host memory
    gpus_per_node: int
    layer_overhead: float = 2e-4  # seconds per layer per microbatch (forward + backward): launches, the schedule


GPU_DEFAULTS = {"peak_tflops": 989.0, "intra_gbs": 150.0, "inter_gbs": 25.0, "pcie_gbs": 25.0}  # an H100's
CPU_DEFAULTS = {"peak_tflops": 0.05, "intra_gbs": 2.0, "inter_gbs": 2.0, "pcie_gbs": 10.0}  # a CPU process's


def default_machine(
    gpu: bool,
    devices_per_node: int,
    efficiency: float,
    peak_tflops: float | None = None,
    intra_gbs: float | None = None,
    inter_gbs: float | None = None,
) -> Machine:
    """The machine to rank layouts on: the figures given, the rest a GPU's (H100) or a CPU process's defaults."""
    defaults = GPU_DEFAULTS if gpu else CPU_DEFAULTS
    return Machine(
        (peak_tflops or defaults["peak_tflops"]) * 1e12,
        efficiency,
        (intra_gbs or defaults["intra_gbs"]) * 1e9,
        (inter_gbs or defaults["inter_gbs"]) * 1e9,
        defaults["pcie_gbs"] * 1e9,
        devices_per_node,
    )


def step_seconds(
    m: ModelConfig,
    vocab: int,
    comm: Comm,
    hw: Machine,
    world: int,
    tp: int,
    pp: int,
    global_batch: int,
    microbatches: int,
    recompute: str,
) -> float:
    """Compute (with the 1F1B bubble and recomputation), a fixed cost per layer and microbatch (what makes
    small micro-batches slower), plus communication, assuming no overlap."""
    flops = flops_per_token(m, vocab) * global_batch * m.seq_len / world
    flops *= {"none": 1.0, "selective": 1.03, "full": 4 / 3}[recompute]
    compute = flops / (hw.peak_flops * hw.efficiency) * (microbatches + pp - 1) / microbatches
    compute += hw.layer_overhead * microbatches * m.num_layers / pp
    dp_bw = hw.inter_bw if world > hw.gpus_per_node and tp * pp < world else hw.intra_bw
    pp_bw = hw.inter_bw if tp * pp > hw.gpus_per_node else hw.intra_bw
    return (
        compute
        + comm.data_parallel / dp_bw
        + comm.tensor_parallel / hw.intra_bw
        + comm.pipeline / pp_bw
        + comm.offload / hw.pcie_bw
    )
