"""Training sequences for a fixed token budget, in a (seed, epoch)-seeded order; fixed validation batches.

Sequence i is the window tokens[i*seq_len : i*seq_len + seq_len + 1] (input plus shifted target): inputs of
consecutive sequences don't overlap and every budget token is a target at most once per epoch."""

import numpy as np
import torch

from megarecipe.data.errors import DataError
from megarecipe.data.meta import load_meta

IGNORE_INDEX = -100  # target of the padding rows in the last validation batch (torch's cross_entropy default)


def _windows(tokens, seq_len, ids) -> tuple:
    starts = np.asarray(ids, dtype=np.int64) * seq_len
    rows = (
        np.stack([tokens[s : s + seq_len + 1] for s in starts])
        if len(starts)
        else np.empty((0, seq_len + 1), dtype=np.int64)
    )
    rows = torch.from_numpy(rows.astype(np.int64))
    return rows[:, :-1], rows[:, 1:]


class TokenDataset:
    """The first `budget_tokens` training tokens (never dependent on the seed), as a continuous stream of
    epochs; batch `step` of a run is a pure function of (seed, step), so a resume never replays data."""

    def __init__(self, data_dir, seq_len, budget_tokens=None, seed=0):
        self.meta = load_meta(data_dir)
        available = self.meta.train_tokens
        budget = available if budget_tokens is None else int(budget_tokens)
        if seq_len < 1:
            raise DataError(f"seq_len={seq_len} must be >= 1")
        if budget > available:
            raise DataError(
                f"budget of {budget} tokens is more than the {available} training tokens in "
                f"{data_dir}; lower data.train_tokens or prepare more text"
            )
        if budget < seq_len + 1:
            raise DataError(f"budget of {budget} tokens is less than one sequence of seq_len+1={seq_len + 1}")
        if seed < 0:
            raise DataError(f"seed={seed} must be >= 0")
        self.seq_len, self.budget_tokens, self.seed = seq_len, budget, seed
        self.tokens = self.meta.tokens("train")[:budget]
        self.num_sequences = (budget - 1) // seq_len
        self.tokens_per_epoch = self.num_sequences * seq_len
        self._orders = {}  # the permutations of the last two epochs used (a batch may straddle two)

    def order(self, epoch) -> np.ndarray:
        if epoch not in self._orders:
            if len(self._orders) >= 2:
                self._orders.pop(min(self._orders))
            rng = np.random.default_rng([self.seed, epoch])  # never seed + epoch: that collides across seeds
            self._orders[epoch] = rng.permutation(self.num_sequences)
        return self._orders[epoch]

    def sample_ids(self, start, count) -> np.ndarray:
        """Sequence ids of global samples [start, start + count); sample g is in epoch g // num_sequences."""
        g = np.arange(start, start + count, dtype=np.int64)
        epochs, positions = np.divmod(g, self.num_sequences)
        ids = np.empty(count, dtype=np.int64)
        for epoch in np.unique(epochs):
            mask = epochs == epoch
            ids[mask] = self.order(int(epoch))[positions[mask]]
        return ids

    def batch(self, step, global_batch, dp_rank=0, dp_size=1):
        """This rank's contiguous slice of global batch `step`: (inputs, targets), int64 [b, seq_len]."""
        if global_batch % dp_size:
            raise DataError(f"global batch {global_batch} is not divisible by the data-parallel size {dp_size}")
        if not 0 <= dp_rank < dp_size:
            raise DataError(f"dp_rank={dp_rank} is outside [0, {dp_size})")
        return self.windows(self.batch_ids(step, global_batch, dp_rank, dp_size))

    def batch_ids(self, step, global_batch, dp_rank=0, dp_size=1) -> np.ndarray:
        """The sequence ids of this rank's slice of global batch `step` (what `batch` returns the windows of)."""
        b = global_batch // dp_size
        return self.sample_ids(step * global_batch + dp_rank * b, b)

    def windows(self, ids) -> tuple:
        """(inputs, targets) of the given sequence ids, int64 [len(ids), seq_len]."""
        return _windows(self.tokens, self.seq_len, ids)


def validation_batches(data_dir, seq_len, batch_size, max_tokens=None, dp_rank=0, dp_size=1):
    """The held-out sequences (of the first `max_tokens` val tokens), in file order, as batches of `batch_size`
    sequences split over data-parallel ranks. Every rank gets the same number of [batch_size // dp_size, seq_len]
    batches; rows past the end (last batch only) have targets IGNORE_INDEX. So each run on a data dir is
    measured on exactly the same tokens, whatever its batch size or data-parallel size."""
    meta = load_meta(data_dir)
    if batch_size % dp_size:
        raise DataError(f"validation batch {batch_size} is not divisible by the data-parallel size {dp_size}")
    tokens = meta.tokens("val")
    if max_tokens is not None:
        tokens = tokens[:max_tokens]
    n = (len(tokens) - 1) // seq_len
    if n < 1:
        raise DataError(
            f"the validation split of {data_dir} has {len(tokens)} tokens (max_tokens={max_tokens}), "
            f"less than one sequence of {seq_len + 1}; prepare with a larger --val-tokens"
        )
    return _validation_iter(tokens, seq_len, n, batch_size, dp_rank, dp_size, meta.eos_id)


def _validation_iter(tokens, seq_len, n, batch_size, dp_rank, dp_size, pad_id):
    b = batch_size // dp_size
    for start in range(0, n, batch_size):
        ids = np.arange(start + dp_rank * b, start + dp_rank * b + b)
        real = ids[ids < n]
        inputs, targets = _windows(tokens, seq_len, real)
        if len(real) < b:
            pad = b - len(real)
            inputs = torch.cat([inputs, torch.full((pad, seq_len), pad_id, dtype=torch.int64)])
            targets = torch.cat([targets, torch.full((pad, seq_len), IGNORE_INDEX, dtype=torch.int64)])
        yield inputs, targets
