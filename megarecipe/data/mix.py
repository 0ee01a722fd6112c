"""Training on several data dirs at fixed ratios (data.mix): the first is the real data, the others fill up.

An epoch is one pass over the real dir's budget (its num_sequences, the run's D) plus, for every other dir,
round(num_sequences * ratio / first ratio) sequences: so the counts are exact over every epoch. The epoch's
positions follow one fixed pattern that spreads each source evenly (its j-th sequence sits near (j + 1/2) / count
of the way through), and the j-th sequence of source k in epoch e is sample e * count_k + j of that dir's own
(seed, epoch)-shuffled stream (a TokenDataset). So mix epoch e is real epoch e, a smaller dir simply cycles
through its own epochs, and batch `step` is a pure function of (seed, step).

Ids are rows (source, sequence id in that source), int64 [n, 2].
"""

from __future__ import annotations

import numpy as np
import torch

from megarecipe.config.sources import mix_counts
from megarecipe.data.dataset import TokenDataset, _windows
from megarecipe.data.errors import DataError


def interleave(counts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(source, occurrence) of each position of an epoch; source k fills exactly counts[k] positions."""
    sources = np.concatenate([np.full(c, k, dtype=np.int64) for k, c in enumerate(counts)])
    occurrence = np.concatenate([np.arange(c, dtype=np.int64) for c in counts])
    counts_of = np.asarray(counts, dtype=np.float64)[sources]
    order = np.lexsort((sources, (occurrence + 0.5) / counts_of))  # by place in the epoch, ties by source
    return sources[order], occurrence[order]


class MixDataset:
    """TokenDataset's interface (batch_ids, windows) over several data dirs."""

    def __init__(self, sources: list, seq_len: int, budget_tokens=None, seed: int = 0):
        """sources: (data dir, ratio) pairs; budget_tokens applies to the first."""
        self.parts = [TokenDataset(sources[0][0], seq_len, budget_tokens, seed)]
        self.parts += [TokenDataset(d, seq_len, None, seed) for d, _ in sources[1:]]
        self.counts = mix_counts(self.parts[0].num_sequences, [w for _, w in sources])
        if min(self.counts) < 1:
            raise DataError(
                f"data.mix ratios {[str(w) for _, w in sources]} give a source no sequence per epoch of "
                f"{self.counts[0]}; raise its ratio"
            )
        self.seq_len, self.seed = seq_len, seed
        self.meta = self.parts[0].meta
        self.num_sequences = sum(self.counts)  # per epoch
        self.pattern, self.occurrence = interleave(self.counts)

    def sample_ids(self, start, count) -> np.ndarray:
        """(source, id) rows of global samples [start, start + count)."""
        g = np.arange(start, start + count, dtype=np.int64)
        epochs, positions = np.divmod(g, self.num_sequences)
        src, occ = self.pattern[positions], self.occurrence[positions]
        ids = np.empty((count, 2), dtype=np.int64)
        ids[:, 0] = src
        for k, part in enumerate(self.parts):
            mask = src == k
            if mask.any():
                stream = epochs[mask] * self.counts[k] + occ[mask]  # this source's own global samples
                own_epochs, own_positions = np.divmod(stream, part.num_sequences)
                picked = np.empty(len(stream), dtype=np.int64)
                for e in np.unique(own_epochs):
                    picked[own_epochs == e] = part.order(int(e))[own_positions[own_epochs == e]]
                ids[mask, 1] = picked
        return ids

    def batch_ids(self, step, global_batch, dp_rank=0, dp_size=1) -> np.ndarray:
        if global_batch % dp_size:
            raise DataError(f"global batch {global_batch} is not divisible by the data-parallel size {dp_size}")
        b = global_batch // dp_size
        return self.sample_ids(step * global_batch + dp_rank * b, b)

    def batch(self, step, global_batch, dp_rank=0, dp_size=1):
        return self.windows(self.batch_ids(step, global_batch, dp_rank, dp_size))

    def windows(self, ids) -> tuple:
        ids = np.asarray(ids)
        inputs = torch.empty((len(ids), self.seq_len), dtype=torch.int64)
        targets = torch.empty_like(inputs)
        for k, part in enumerate(self.parts):
            rows = np.flatnonzero(ids[:, 0] == k)
            if len(rows):
                x, y = _windows(part.tokens, self.seq_len, ids[rows, 1])
                inputs[torch.from_numpy(rows)], targets[torch.from_numpy(rows)] = x, y
        return inputs, targets
