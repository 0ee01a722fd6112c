"""Training sequences: a fixed budget, (seed, epoch)-seeded order, resume at any step, data-parallel slices;
and the fixed validation batches."""

import numpy as np
import pytest
import torch

from megarecipe.data.dataset import IGNORE_INDEX, TokenDataset, validation_batches
from megarecipe.data.errors import DataError
from megarecipe.data.meta import load_meta

L = 32


def epoch_rows(ds, epoch):
    """Every (input + last target) row of one epoch, as a sorted list of tuples."""
    return sorted(tuple(ds.tokens[i * L : i * L + L + 1].tolist()) for i in ds.order(epoch))


def test_budget_is_the_first_tokens(tiny_data):
    meta = load_meta(tiny_data)
    budget = 50_000
    for seed in (0, 7):
        ds = TokenDataset(tiny_data, L, budget_tokens=budget, seed=seed)
        assert np.array_equal(ds.tokens, meta.tokens("train")[:budget])
        assert ds.num_sequences == (budget - 1) // L and ds.tokens_per_epoch == ds.num_sequences * L
        assert not ds.tokens.flags.writeable
    assert TokenDataset(tiny_data, L).num_sequences == (meta.train_tokens - 1) // L


def test_order_is_a_seeded_permutation(tiny_data):
    a, b = TokenDataset(tiny_data, L, 20_000, seed=3), TokenDataset(tiny_data, L, 20_000, seed=3)
    assert np.array_equal(a.order(2), b.order(2))
    assert np.array_equal(np.sort(a.order(2)), np.arange(a.num_sequences))
    assert not np.array_equal(a.order(0), a.order(1))
    assert not np.array_equal(a.order(0), TokenDataset(tiny_data, L, 20_000, seed=4).order(0))


def test_seed_epoch_pairs_do_not_collide(tiny_data):
    # under seed + epoch, (s, e + 1) and (s + 1, e) would share an order
    ds = {s: TokenDataset(tiny_data, L, 20_000, seed=s) for s in range(4)}
    for s in range(3):
        for e in range(3):
            assert not np.array_equal(ds[s].order(e + 1), ds[s + 1].order(e))


def test_same_sequences_for_every_seed(tiny_data):
    rows = [epoch_rows(TokenDataset(tiny_data, L, 20_000, seed=s), epoch=s) for s in (0, 1, 5)]
    assert rows[0] == rows[1] == rows[2]


def test_inputs_and_targets(tiny_data):
    ds = TokenDataset(tiny_data, L, 20_000, seed=1)
    x, y = ds.batch(0, 8)
    assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape == (8, L)
    assert torch.equal(x[:, 1:], y[:, :-1])
    first = int(ds.order(0)[0])
    assert x[0].tolist() == ds.tokens[first * L : first * L + L].tolist()


def test_stream_runs_epoch_after_epoch(tiny_data):
    ds = TokenDataset(tiny_data, L, 5_000, seed=2)
    n = ds.num_sequences
    assert np.array_equal(ds.sample_ids(0, 3 * n), np.concatenate([ds.order(e) for e in range(3)]))
    assert np.array_equal(ds.sample_ids(n - 2, 4), np.concatenate([ds.order(0)[-2:], ds.order(1)[:2]]))


def test_resume_gives_the_same_batches(tiny_data):
    ds = TokenDataset(tiny_data, L, 5_000, seed=9)
    batch = 10  # does not divide num_sequences: batches straddle epochs
    assert ds.num_sequences % batch
    # an independent reference: walk the epochs in order, cutting the stream of sequences into batches
    stream = np.concatenate([np.random.default_rng([9, e]).permutation(ds.num_sequences) for e in range(3)])
    steps = len(stream) // batch
    for s in (0, 1, steps // 3, steps // 3 + 1, steps - 1):
        fresh = TokenDataset(tiny_data, L, 5_000, seed=9)
        x, y = fresh.batch(s, batch)
        ids = stream[s * batch : (s + 1) * batch]
        assert x.tolist() == [ds.tokens[i * L : i * L + L].tolist() for i in ids]
        assert y.tolist() == [ds.tokens[i * L + 1 : i * L + L + 1].tolist() for i in ids]


def test_dp_slices_partition_the_global_batch(tiny_data):
    ds = TokenDataset(tiny_data, L, 20_000, seed=0)
    whole = ds.batch(5, 12)
    for dp in (2, 3, 4):
        parts = [ds.batch(5, 12, dp_rank=r, dp_size=dp) for r in range(dp)]
        assert all(p[0].shape[0] == 12 // dp for p in parts)
        assert torch.equal(torch.cat([p[0] for p in parts]), whole[0])
        assert torch.equal(torch.cat([p[1] for p in parts]), whole[1])
    with pytest.raises(DataError, match="not divisible"):
        ds.batch(0, 10, dp_rank=0, dp_size=4)


def test_budget_errors(tiny_data):
    train = load_meta(tiny_data).train_tokens
    with pytest.raises(DataError, match=f"more than the {train} training tokens"):
        TokenDataset(tiny_data, L, budget_tokens=train + 1)
    with pytest.raises(DataError, match="less than one sequence"):
        TokenDataset(tiny_data, L, budget_tokens=L)
    assert TokenDataset(tiny_data, L, budget_tokens=L + 1).num_sequences == 1
    with pytest.raises(DataError, match="does not exist"):
        TokenDataset(tiny_data + "-missing", L)


def real_rows(batches):
    rows = []
    for x, y in batches:
        rows += [(tuple(a), tuple(b)) for a, b in zip(x.tolist(), y.tolist(), strict=True) if b[0] != IGNORE_INDEX]
    return rows


def test_validation_batches_are_fixed(tiny_data):
    meta = load_meta(tiny_data)
    val = meta.tokens("val")
    base = list(validation_batches(tiny_data, L, 8))
    n = (meta.val_tokens - 1) // L
    assert sum(x.shape[0] for x, _ in base) >= n and base[0][0][0].tolist() == val[:L].tolist()
    expected = real_rows(base)
    assert len(expected) == n
    assert real_rows(validation_batches(tiny_data, L, 8)) == expected
    assert real_rows(validation_batches(tiny_data, L, 5)) == expected
    # data-parallel: same number of batches on every rank, and together exactly the same rows
    per_rank = [list(validation_batches(tiny_data, L, 6, dp_rank=r, dp_size=3)) for r in range(3)]
    assert len({len(p) for p in per_rank}) == 1 and all(x.shape == (2, L) for p in per_rank for x, _ in p)
    assert sorted(sum((real_rows(p) for p in per_rank), [])) == sorted(expected)


def test_validation_prefix_and_padding(tiny_data):
    rows = real_rows(validation_batches(tiny_data, L, 4, max_tokens=10 * L + 1))
    assert len(rows) == 10
    assert rows == real_rows(validation_batches(tiny_data, L, 4))[:10]
    x, y = list(validation_batches(tiny_data, L, 4, max_tokens=10 * L + 1))[-1]
    assert (y[2:] == IGNORE_INDEX).all() and (y[:2] != IGNORE_INDEX).all()
    with pytest.raises(DataError, match="validation split"):
        validation_batches(tiny_data, L, 4, max_tokens=L)
