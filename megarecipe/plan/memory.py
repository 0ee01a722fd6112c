"""Bytes per device: model states (parameters, gradients, optimizer states), activations and buffers.

Model states follow what DeepSpeed 0.19 allocates under this trainer (checked byte for byte against a live
engine on CPU, see tests): ZeRO-1/2 flatten each AdamW group into one buffer padded to 2 x DP elements and
keep a full-precision master copy of this rank's partition even in fp32 runs; ZeRO-3 partitions every tensor
on its own (ceil(numel / DP) elements) and keeps whole copies of tensors at or under the persistence
threshold. Gradients as held after backward: ZeRO-0/1 keep every local gradient until engine.step() reduces
them (unmanaged accumulation); ZeRO-2 reduces during backward and keeps, in one contiguous buffer, the whole
gradients of the tensors that overlap this rank's partition; ZeRO-3 keeps its partition. Scalar bookkeeping
(Adam's step counters, norms) is not counted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from megarecipe.config import ModelConfig
from megarecipe.plan.shapes import Tensor, largest_layer, stage_tensors

ALIGN = 2  # DeepSpeed's nccl_start_alignment_factor: flat groups pad to ALIGN * DP elements
ADAM = 8  # two fp32 moments per element
GPU_RESERVE = 1 << 30  # CUDA context, allocator slack and workspaces outside max_memory_allocated


@dataclass
class ZeroSetting:
    stage: int
    offload_optimizer: bool = False
    offload_params: bool = False
    reduce_bucket: int = 50_000_000  # elements
    prefetch_bucket: int = 50_000_000  # ZeRO-3, elements
    persistence_threshold: int = 100_000  # ZeRO-3, elements

    @classmethod
    def from_json(cls, ds: dict) -> "ZeroSetting":
        z = ds.get("zero_optimization", {})
        return cls(
            stage=int(z.get("stage", 0)),
            offload_optimizer=z.get("offload_optimizer", {}).get("device", "none") in ("cpu", "nvme"),
            offload_params=z.get("offload_param", {}).get("device", "none") in ("cpu", "nvme"),
            reduce_bucket=int(z.get("reduce_bucket_size", 50_000_000)),
            prefetch_bucket=int(z.get("stage3_prefetch_bucket_size", 50_000_000)),
            persistence_threshold=int(z.get("stage3_param_persistence_threshold", 100_000)),
        )


@dataclass
class Memory:
    params: int
    grads: int
    optimizer: int
    activations: int
    buffers: int
    host: int  # bytes offloaded to CPU memory per process
    deepspeed_model_states: Optional[int] = None  # DeepSpeed's own estimate, where it has one

    @property
    def model_states(self) -> int:
        return self.params + self.grads + self.optimizer

    @property
    def total(self) -> int:
        return self.model_states + self.activations + self.buffers

    def as_dict(self) -> dict:
        return {**asdict(self), "model_states": self.model_states, "total": self.total}


def _pad(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _stage2_grad_elements(tensors: list[Tensor], dp: int, rank: int) -> int:
    """Elements of the tensors that overlap data-parallel rank `rank`'s slice of each flat group."""
    total = 0
    for decay in (True, False):
        sizes = [t.numel for t in tensors if t.decay == decay]
        part = _pad(sum(sizes), ALIGN * dp) // dp
        lo, hi, start = rank * part, (rank + 1) * part, 0
        for n in sizes:
            if start < hi and start + n > lo:
                total += n
            start += n
    return total


def model_states(
    tensors: list[Tensor], z: ZeroSetting, dp: int, bf16: bool, dp_rank: Optional[int] = None
) -> tuple[int, int, int, int, int]:
    """(params, grads, optimizer, host, step-time buffers) in bytes on data-parallel rank `dp_rank`
    (None: the rank holding the most)."""
    pb = 2 if bf16 else 4
    local = sum(t.numel for t in tensors)
    if z.stage == 0:
        return local * pb, local * pb, local * ADAM, 0, 0
    if z.stage in (1, 2):
        groups = [sum(t.numel for t in tensors if t.decay == d) for d in (True, False)]
        flat = sum(_pad(n, ALIGN * dp) for n in groups if n)
        part = flat // dp
        params, grads = flat * pb, local * pb
        if z.stage == 2:
            ranks = range(dp) if dp_rank is None else [dp_rank]
            grads = max(_stage2_grad_elements(tensors, dp, r) for r in ranks) * pb
        optimizer = part * (4 + ADAM)  # master partition + moments
        step_buffer = part * 4  # the fp32 gradient partition built in step()
        if z.stage == 2:
            step_buffer += min(z.reduce_bucket, local) * pb
        if z.offload_optimizer:
            return params, grads, 0, optimizer + step_buffer, min(z.reduce_bucket, local) * pb
        return params, grads, optimizer, 0, step_buffer
    part = sum(-(-t.numel // dp) for t in tensors)
    persistent = sum(t.numel for t in tensors if t.numel <= z.persistence_threshold)
    gathered = min(z.prefetch_bucket, local) + largest_layer(tensors)  # live full tensors during fwd/bwd
    params, grads, optimizer, host = (part + persistent) * pb, part * 4, part * (4 + ADAM), 0
    if z.offload_optimizer:  # gradient partitions go to host memory too; a reduce bucket stays on the device
        host, optimizer, grads = host + optimizer + grads, 0, 0
        gathered += min(z.reduce_bucket, local)
    if z.offload_params:
        host, params = host + part * pb, persistent * pb
    return params, grads, optimizer, host, gathered * pb


def deepspeed_estimate(z: ZeroSetting, local_params: int, largest: int, dp: int) -> Optional[int]:
    """DeepSpeed's per-GPU model-state estimate (16-bit params, Adam) for ZeRO-2/3; None where it has none."""
    if z.stage == 2:
        from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

        _, gpu = estimate_zero2_model_states_mem_needs(
            local_params, num_gpus_per_node=dp, num_nodes=1, cpu_offload=z.offload_optimizer
        )
        return int(gpu)
    if z.stage == 3:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

        _, gpu, _ = estimate_zero3_model_states_mem_needs(
            local_params,
            largest,
            num_gpus_per_node=dp,
            num_nodes=1,
            cpu_offload=z.offload_optimizer,
            cpu_offload_params=z.offload_params,
            zero_init=False,
        )
        return int(gpu)
    return None


def layer_activation_elements(
    m: ModelConfig, micro_batch: int, tp: int, recompute: str, fused_attention: bool = False
) -> tuple[int, int]:
    """(kept per layer, extra live while one layer is recomputed) elements for one microbatch: what autograd
    keeps of a megatron-core layer for backward, fitted exactly to the saved tensors of models of several shapes
    at TP=1 and TP=2 (tests/unit/test_plan.py checks it). Per token: 6h outside tensor parallelism (the residual
    stream and the two RMSNorms' inputs and outputs) and two fp32 norm statistics; per TP shard the SwiGLU's 5f,
    and attention: unfused, q, the expanded k/v, the context and its copy (6h, 4h when query groups share k/v)
    plus the a*s probabilities; fused, q, k, the qkv output, the context and its copy (3h + 3 * kv width) plus
    one log-sum-exp per head. RoPE's cos/sin tables add 4 * s * head_dim a layer. Selective recompute keeps the
    checkpointed core attention's inputs instead of what it saves inside (the unfused expanded k/v and
    probabilities, the fused log-sum-exp): 3h + 3 * kv width under either kernel. Full keeps only each layer's
    input."""
    h, f, a, g, s, b = (
        m.hidden_size,
        m.ffn_hidden_size,
        m.num_attention_heads,
        m.num_query_groups,
        m.seq_len,
        micro_batch,
    )
    head = h // a
    tokens = b * s
    dense = tokens * (6 * h + 2 + 5 * f // tp) + 4 * s * head
    if fused_attention:
        attention, scores = tokens * (3 * h + 3 * head * g + a) // tp, 0
    else:
        attention, scores = tokens * (6 * h - (2 * h if a != g else 0)) // tp, tokens * a * s // tp
    if recompute == "none":
        return dense + attention + scores, 0
    if recompute == "selective":  # while one layer's core attention is recomputed, its internals are live again
        inputs = tokens * (3 * h + 3 * head * g) // tp
        return dense + inputs, attention + scores - inputs
    return tokens * h, dense + attention + scores


def fused_attention(m: ModelConfig, gpu: bool) -> bool:
    """Whether model.kernels computes attention without materialising the scores: sdpa and te do, and auto
    means sdpa on a GPU."""
    return m.kernels in ("sdpa", "te") or (m.kernels == "auto" and gpu)


def activations(
    m: ModelConfig,
    vocab: int,
    micro_batch: int,
    tp: int,
    pp: int,
    stage: int,
    microbatches: int,
    recompute: str,
    bf16: bool,
    gpu: bool = False,
) -> int:
    """Peak activation bytes of one pipeline stage. 1F1B keeps up to pp - stage microbatches in flight on a
    stage; the last stage also holds fp32 logits and their gradient."""
    ab = 2 if bf16 else 4
    stored, extra = layer_activation_elements(m, micro_batch, tp, recompute, fused_attention(m, gpu))
    in_flight = min(microbatches, pp - stage) if pp > 1 else 1
    per_micro = stored * (m.num_layers // pp) + micro_batch * m.seq_len * m.hidden_size
    total = (per_micro * in_flight + extra) * ab
    if stage == pp - 1:  # the final norm's input and output, and the fp32 logits with their gradient
        total += 2 * micro_batch * m.seq_len * m.hidden_size * ab + 2 * micro_batch * m.seq_len * (vocab // tp) * 4
    return total


def plan_memory(
    m: ModelConfig,
    vocab: int,
    z: ZeroSetting,
    tp: int,
    pp: int,
    dp: int,
    micro_batch: int,
    microbatches: int,
    recompute: str,
    bf16: bool,
    gpu: bool,
    with_deepspeed: bool = True,
) -> Memory:
    """The worst pipeline stage's bytes on one device."""
    worst = None
    for stage in sorted({0, pp - 1}):
        tensors = stage_tensors(m, vocab, tp, pp, stage)
        params, grads, optimizer, host, buffers = model_states(tensors, z, dp, bf16)
        act = activations(m, vocab, micro_batch, tp, pp, stage, microbatches, recompute, bf16, gpu)
        mem = Memory(params, grads, optimizer, act, buffers + (GPU_RESERVE if gpu else 0), host)
        if with_deepspeed:
            mem.deepspeed_model_states = deepspeed_estimate(
                z, sum(t.numel for t in tensors), largest_layer(tensors), dp
            )
        if worst is None or mem.total > worst.total:
            worst = mem
    return worst


def rank_model_states(
    m: ModelConfig, vocab: int, z: ZeroSetting, tp: int, pp: int, dp: int, bf16: bool, global_rank: int
) -> dict:
    """Planned {'params', 'grads', 'optimizer'} bytes of one global rank (megatron's order: TP fastest, then
    DP, then PP), to compare with what RUN/memory.json says that rank held."""
    stage, dp_rank = global_rank // (tp * dp), (global_rank // tp) % dp
    params, grads, optimizer, _, _ = model_states(stage_tensors(m, vocab, tp, pp, stage), z, dp, bf16, dp_rank)
    return {"params": params, "grads": grads, "optimizer": optimizer}
