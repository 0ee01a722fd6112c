"""Let megatron-core (0.16.x) and DeepSpeed run on a CPU-only torch build.

megatron-core assumes CUDA in a few places: tensors created with device="cuda" (pipeline schedules),
`torch.cuda.current_device()` used as a device argument, `torch.cuda.synchronize()` in p2p code, and a
CUDA RNG tracker for tensor-parallel seeds. On a machine without CUDA those calls fail; here each is
pointed at the CPU. DeepSpeed JIT-compiles a shared-memory comm op on CPU (~30 s); plain gloo is used
instead. `apply()` does nothing when CUDA is present, so none of this ever runs on a GPU.
"""

from __future__ import annotations

import functools
import importlib
import sys

import torch

_FACTORIES = ("zeros", "ones", "empty", "full", "tensor", "arange", "rand", "randn", "randint", "as_tensor")
_applied = False


def _cpu_device(device):
    if isinstance(device, int) or (isinstance(device, str) and device.startswith("cuda")):
        return "cpu"
    if isinstance(device, torch.device) and device.type == "cuda":
        return torch.device("cpu")
    return device


def _on_cpu(factory):
    @functools.wraps(factory)
    def wrapper(*args, **kwargs):
        if "device" in kwargs:
            kwargs["device"] = _cpu_device(kwargs["device"])
        return factory(*args, **kwargs)

    return wrapper


def needed() -> bool:
    return not torch.cuda.is_available()


def apply() -> bool:
    """Install the CPU fallbacks once, only when CUDA is absent. Returns whether they are active."""
    global _applied
    if _applied or not needed():
        return _applied
    # `with torch.device(...)` fills a device to the factories it finds in a set cached on first use; build that set
    # now, from the real factories, or it would hold the wrappers and the context would stop reaching them
    # (transformers then misses its meta-device init and leaves non-persistent buffers such as inv_freq unset).
    import torch.utils._device as device_ctx

    if not hasattr(device_ctx, "_device_constructors"):
        raise RuntimeError(
            "torch changed: torch.utils._device._device_constructors is gone; pin torch to a release that has it"
        )
    device_ctx._device_constructors()
    for name in _FACTORIES:
        setattr(torch, name, _on_cpu(getattr(torch, name)))
    torch.cuda.current_device = lambda: "cpu"
    torch.cuda.synchronize = lambda *a, **k: None
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.cuda.get_rng_state = lambda device="cuda": torch.get_rng_state()
    torch.cuda.manual_seed = lambda seed: torch.manual_seed(seed)

    # The tensor-parallel RNG tracker swaps CUDA generator states; use the CPU generator's instead.
    import megatron.core.tensor_parallel.random as mp_random

    for private in ("_get_cuda_rng_state", "_set_cuda_rng_state"):
        if not hasattr(mp_random, private):
            raise RuntimeError(
                f"megatron-core changed: tensor_parallel.random.{private} is gone; "
                f"pin megatron-core to the tested 0.16.x"
            )
    mp_random._get_cuda_rng_state = lambda device="cuda", clone=False, graph_safe=False: torch.get_rng_state()
    mp_random._set_cuda_rng_state = lambda new_state, device=-1, graph_safe=False: torch.set_rng_state(new_state)

    # `import deepspeed.comm.torch as m` would bind torch itself; fetch the submodule from sys.modules.
    importlib.import_module("deepspeed.comm.torch")
    ds_comm = sys.modules["deepspeed.comm.torch"]
    if not hasattr(ds_comm, "build_shm_op"):
        raise RuntimeError("deepspeed changed: deepspeed.comm.torch.build_shm_op is gone; pin deepspeed to 0.19.x")
    ds_comm.build_shm_op = lambda: None
    _applied = True
    return True
