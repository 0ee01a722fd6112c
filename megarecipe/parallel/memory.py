"""The model-state bytes a rank actually holds, read from the live engine: parameters, gradients and
optimizer states (master copies and moments), each storage counted once. Scalars (step counters, norms) and
meta tensors are left out. Used by the trainer to write RUN/memory.json, which tools/zero_plan.py compares
with its plan."""

from __future__ import annotations

import torch
import torch.distributed as dist

from megarecipe import atomic

KINDS = ("params", "grads", "optimizer")


def _walk(obj, path: str, out: list, seen: set, depth: int = 0) -> None:
    if depth > 5 or id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        out.append((path, obj))
        if obj.grad is not None:
            out.append((path + ".grad", obj.grad))
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            _walk(value, f"{path}[{key if isinstance(key, (str, int)) else ''}]", out, seen, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _walk(value, f"{path}[{i}]", out, seen, depth + 1)
    elif isinstance(obj, torch.optim.Optimizer):
        _walk(obj.state, path + ".state", out, seen, depth + 1)
        _walk(obj.param_groups, path + ".param_groups", out, seen, depth + 1)
        if depth < 2:
            _walk(vars(obj), path, out, seen, depth + 1)
    elif hasattr(obj, "__dict__") and not isinstance(obj, (torch.nn.Module, type)) and depth < 3:
        _walk(vars(obj), path, out, seen, depth + 1)


def _key(t: torch.Tensor):
    storage = t.untyped_storage()
    return t.device.type, storage.data_ptr(), storage.nbytes()


def held_bytes(engine) -> dict:
    """{'params', 'grads', 'optimizer'} bytes held by this rank now."""
    counted: dict = {}

    def add(kind: str, t) -> None:
        if t is None or t.device.type == "meta" or t.numel() <= 1:
            return
        counted.setdefault(_key(t), kind)

    module_params = list(engine.module.parameters())
    for p in module_params:
        add("params", p)
        add("params", getattr(p, "ds_tensor", None))
    for p in module_params:
        add("grads", p.grad)
    found: list = []
    _walk(engine.optimizer, "", found, set())
    for path, t in found:
        add("grads" if "grad" in path.lower() else "optimizer", t)
    totals = dict.fromkeys(KINDS, 0)
    for (_, _, nbytes), kind in counted.items():
        totals[kind] += nbytes
    return totals


class MemoryProbe:
    """Model-state bytes at the last step: gradients between backward and update (the engine frees them in
    step()), parameters and optimizer states after it; written by rank 0 for the ZeRO planner to compare."""

    def __init__(self, engine, last_step: int):
        self.engine, self.last_step, self.grads = engine, last_step, None

    def after_backward(self, step: int) -> None:
        if step == self.last_step:
            self.grads = held_bytes(self.engine)

    def write(self, path: str, first: bool) -> None:
        held = gather_held(self.engine, self.grads)  # a collective: every rank calls it
        if first:
            write_memory(path, held)


def gather_held(engine, grads_at_backward: dict | None = None) -> list[dict]:
    """Every rank's figures (a collective): params and optimizer now, grads as measured after the last
    backward when given (the engine frees them in step()), and the CUDA peak where there is one."""
    mine = held_bytes(engine)
    if grads_at_backward is not None:
        mine["grads"] = grads_at_backward["grads"]
    mine["peak_allocated"] = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    return everyone


def write_memory(path: str, per_rank: list[dict]) -> None:
    atomic.write_json(path, {"ranks": per_rank})


class SavedActivations:
    """Bytes of the tensors autograd saves for backward while the block runs, each storage once, the given
    parameters left out: the activation memory a forward holds until its backward.

        with SavedActivations(model.parameters()) as saved:
            loss = model(...)
        saved.bytes
    """

    def __init__(self, parameters):
        self.weights = {p.untyped_storage().data_ptr() for p in parameters}
        self.storages: dict = {}
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in self.weights:
            self.storages[storage.data_ptr()] = storage.nbytes()
        return t

    def __enter__(self):
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self.hooks.__exit__(*exc)

    @property
    def bytes(self) -> int:
        return sum(self.storages.values())
