"""Process groups: the device and backend chosen at run time (NCCL on GPUs, gloo on CPU), megatron's
tensor/pipeline groups, and decisions every rank must take together."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from megarecipe.parallel import cpu_compat
from megarecipe.system import free_port, stop_requested, watch_stop_signals


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _single_process_env() -> None:
    """`python -m megarecipe.cli.train` with no launcher: a world of one."""
    if "WORLD_SIZE" in os.environ:
        return
    os.environ.update(
        RANK="0",
        LOCAL_RANK="0",
        WORLD_SIZE="1",
        LOCAL_WORLD_SIZE="1",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port()),
    )


def cpu_threads() -> int:
    """Threads of this rank on a CPU: MEGARECIPE_THREADS, else OMP_NUM_THREADS (what torchrun, the DeepSpeed
    launcher and a user's shell set), else the cores shared among this node's ranks. One thread too many costs
    more than it gains for small models: an idle OpenMP thread spins at every barrier, and a descheduled one
    (on a busy machine) stalls each op (measured: a tiny run took 10x the CPU on two threads of a loaded 2-core
    machine than on one)."""
    given = os.environ.get("MEGARECIPE_THREADS") or os.environ.get("OMP_NUM_THREADS")
    if given and given.isdigit() and int(given) > 0:
        return int(given)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    return max(1, (os.cpu_count() or 1) // local_world)


def init(tp: int, pp: int, seed: int) -> torch.device:
    """Join the world the launcher started and build megatron's groups; returns this rank's device."""
    _single_process_env()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        cpu_compat.apply()
        device = torch.device("cpu")
        backend = "gloo"
        torch.set_num_threads(cpu_threads())
    import deepspeed
    from megatron.core import parallel_state as ps
    from megatron.core import tensor_parallel

    deepspeed.init_distributed(dist_backend=backend)
    ps.initialize_model_parallel(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp)
    torch.manual_seed(seed)
    tensor_parallel.model_parallel_cuda_manual_seed(seed)
    return device


def shutdown() -> None:
    """Tear the groups down before the interpreter exits: left to static destruction, gloo's worker threads can
    abort a finished rank ("terminate called without an active exception")."""
    from megatron.core import parallel_state as ps

    if dist.is_initialized():
        ps.destroy_model_parallel()
        dist.destroy_process_group()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when it is true on one."""
    seen = torch.tensor([float(flag)], device=device)
    dist.all_reduce(seen, op=dist.ReduceOp.MAX)
    return bool(seen.item())


def all_max(value: float, device: torch.device) -> float:
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.item()


class StopRequest:
    """SIGTERM (a scheduler's preemption or time limit, passed on by the launchers) or SIGUSR1 (Slurm's
    --signal) asks for a checkpoint at the end of the current step and a clean exit; the ranks agree on the
    step."""

    def __init__(self, device: torch.device):
        self.device = device
        watch_stop_signals()  # already watched since the trainer started, when it came through cli.train

    @property
    def requested(self) -> bool:
        return stop_requested()

    def agreed(self) -> bool:
        return any_rank(self.requested, self.device)


def lost_peer(error: BaseException) -> bool:
    """Whether a collective failed because another rank is gone (it failed, or was killed), rather than for a
    reason of this rank's: NCCL and the store raise torch's DistError; gloo a RuntimeError from its transport."""
    return isinstance(error, dist.DistError) or (isinstance(error, RuntimeError) and "gloo/transport" in str(error))
