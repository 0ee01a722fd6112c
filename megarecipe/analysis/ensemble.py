"""The held-out loss of a logit-averaged ensemble for every K = 1..n members, in one pass over the data.

Loss(K) is the cross-entropy of (logits_1 + ... + logits_K) / K on the same held-out tokens as every run's
`val/loss`. Members are added in order to a running logit sum, and the loss of every prefix is taken as it
grows, so all K come out of one pass and memory on a device does not grow with K:

- at most `resident` members are on a device at once. When a process has more members than that, they are
  processed in turns: the held-out batches are cut into chunks, and for each chunk each turn loads its members
  and adds their logits to the chunk's running sums (kept on the CPU between turns);
- with several processes (a torchrun job: gloo on CPU, nccl on GPU), members are dealt out to ranks; each
  rank runs its members on the same batches, and the sum for member k is completed by an all_reduce in which
  only k's owner contributes. The cross-entropy for K is taken on rank (K-1) % world; the totals are summed at
  the end.

bf16 on GPU (logits summed in fp32), fp32 on CPU.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from megarecipe.analysis.members import Member, load_model
from megarecipe.data.dataset import IGNORE_INDEX, validation_batches


@dataclass(frozen=True)
class Placement:
    """Member k goes to turn k // (world * resident), and within its turn to rank o % world, slot o // world."""

    members: int
    world: int = 1
    resident: int | None = None  # per rank; None = all of the rank's members

    @property
    def per_turn(self) -> int:
        return self.world * self.slots

    @property
    def slots(self) -> int:
        return self.resident or math.ceil(self.members / self.world)

    @property
    def turns(self) -> int:
        return math.ceil(self.members / self.per_turn)

    def turn_members(self, turn: int) -> range:
        return range(turn * self.per_turn, min(self.members, (turn + 1) * self.per_turn))

    def owner(self, k: int) -> tuple[int, int]:
        """(rank, slot) of member k."""
        o = k % self.per_turn
        return o % self.world, o // self.world


@contextmanager
def torch_threads(threads: int | None):
    """torch's intra-op threads set to `threads` for the block (None: left as they are), then restored. On a
    CPU one thread too many costs more than it gains for small models (megarecipe/parallel/distributed.py's
    cpu_threads): measured on the loaded 2-core machine, scoring an ensemble of 4 h96 members took 60 CPU-s on
    two threads and 4.4 on one, with the same losses."""
    if not threads:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def default_device():
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


@torch.inference_mode()
def ensemble_losses(
    members: list,
    data_dir: str,
    seq_len: int,
    max_tokens: int | None = None,
    batch_size: int = 8,
    device=None,
    resident: int | None = None,
    chunk_batches: int = 16,
    progress: bool = False,
    dtype: torch.dtype | None = None,
) -> list[float]:
    """Mean per-token loss of the first K members' averaged logits, for K = 1..len(members).

    members: Member (loaded from its export when its turn comes) or a model (tokens -> logits) already in memory.
    Under an initialised torch.distributed process group every rank must call this with the same arguments.
    """
    import torch.distributed as dist

    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    place = Placement(len(members), world, resident)
    batches = list(validation_batches(data_dir, seq_len, batch_size, max_tokens=max_tokens))
    chunks = (
        [batches]
        if place.turns == 1
        else [batches[i : i + chunk_batches] for i in range(0, len(batches), chunk_batches)]
    )
    bar = _progress(progress and rank == 0, len(batches) * place.turns)

    vocab = members[0].info["vocab_size"] if isinstance(members[0], Member) else members[0].vocab_size
    shells, in_slot = [None] * place.slots, [None] * place.slots
    totals = torch.zeros(len(members), dtype=torch.float64)
    count = 0
    for chunk in chunks:
        sums = [None] * len(chunk)  # running logit sums of this chunk's batches, between turns
        for turn in range(place.turns):
            ks = place.turn_members(turn)
            mine = [(slot, k) for k in ks for r, slot in [place.owner(k)] if r == rank]
            for slot, k in mine:
                if in_slot[slot] != k:
                    shells[slot] = _load(members[k], device, dtype, shells[slot])
                    in_slot[slot] = k
            for i, (tokens, targets) in enumerate(chunk):
                tokens, targets = tokens.to(device), targets.to(device).flatten()
                total = None if sums[i] is None else sums[i].to(device)
                for slot in range(place.slots):
                    total = _round(place, ks, slot, rank, world, shells[slot], tokens, targets, total, totals, vocab)
                if turn < place.turns - 1:
                    sums[i] = total.cpu()
                bar.update(1)
        count += sum(int((t != IGNORE_INDEX).sum()) for _, t in chunk)
    bar.close()
    if world > 1:
        totals = totals.to(device)
        dist.all_reduce(totals)
    return (totals.cpu() / count).tolist()


def _round(
    place: Placement, ks: range, slot: int, rank: int, world: int, shell, tokens, targets, total, totals, vocab: int
):
    """Add the members in `slot` of every rank (consecutive k), in order, scoring each prefix. Each rank computes
    one member's logits at a time, all ranks at once; the all_reduce hands each member's logits to everyone."""
    import torch.distributed as dist

    round_ks = [k for k in ks if place.owner(k)[1] == slot]
    mine = next((k for k in round_ks if place.owner(k)[0] == rank), None)
    own = shell(tokens).float().flatten(0, 1) if mine is not None else None
    for k in round_ks:
        logits = own if k == mine else None
        if world > 1:
            if logits is None:
                logits = torch.zeros(targets.numel(), vocab, device=targets.device)
            dist.all_reduce(logits)
        total = logits if total is None else total + logits
        if k % world == rank:
            totals[k] += F.cross_entropy(total / (k + 1), targets, ignore_index=IGNORE_INDEX, reduction="sum").item()
    return total


def _load(member, device, dtype, shell):
    if isinstance(member, Member):
        return load_model(member, device, dtype, shell)
    return member.to(device=device, dtype=dtype).eval()


def _progress(enabled: bool, total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc="ensemble eval", unit="batch", disable=not enabled, dynamic_ncols=True)
