"""Ensemble members' hyperparameters, as the paper chose them.

The shift: from the single model's locally optimal settings, 2x the epochs and 0.5x the weight decay, same LR;
epochs capped at 128 and weight decay floored at 0.1. The box: the shifted point and its four neighbours one
grid step either way in epochs and in weight decay (a neighbour past a grid's end is the point itself, so the box
shrinks there), each trained as a K-member ensemble; the point whose L(K) fit has the lowest asymptote is kept.
"""

from __future__ import annotations

import math

from megarecipe.analysis.fit import FitError, fit_power_law
from megarecipe.recipes.recipe_file import Hyper

MAX_EPOCHS, MIN_WEIGHT_DECAY = 128, 0.1


def shift(hp: Hyper) -> Hyper:
    return Hyper(hp.lr, max(hp.weight_decay * 0.5, MIN_WEIGHT_DECAY), min(hp.epochs * 2, MAX_EPOCHS))


def grids(epochs: list, weight_decay: list) -> tuple[list[int], list[float]]:
    """The members' grids from the single model's: each value and its shifted one, within the cap and floor."""
    ep = sorted({int(e) for e in epochs} | {2 * int(e) for e in epochs})
    wd = sorted({float(w) for w in weight_decay} | {float(w) * 0.5 for w in weight_decay})
    return [e for e in ep if 1 <= e <= MAX_EPOCHS], [w for w in wd if w >= MIN_WEIGHT_DECAY]


def _step(values: list, v, d: int):
    i = min(range(len(values)), key=lambda j: abs(math.log(values[j] / v)))
    return values[min(max(i + d, 0), len(values) - 1)]


def box(hp: Hyper, epochs: list, weight_decay: list) -> list[Hyper]:
    """The shifted point first, then its neighbours in epochs and weight decay (no repeats)."""
    ep, wd = grids(epochs, weight_decay)
    c = shift(hp)
    out = [c]
    for e, w in (
        (_step(ep, c.epochs, -1), c.weight_decay),
        (_step(ep, c.epochs, 1), c.weight_decay),
        (c.epochs, _step(wd, c.weight_decay, -1)),
        (c.epochs, _step(wd, c.weight_decay, 1)),
    ):
        cand = Hyper(hp.lr, float(w), int(e))
        if cand not in out:
            out.append(cand)
    return out


def k_asymptote(losses_by_k: list[float]) -> float:
    """E of L(K) = A / K^alpha + E over K = 1..n; with fewer than 3 members, the largest ensemble's loss."""
    if len(losses_by_k) < 3:
        return float(losses_by_k[-1])
    try:
        return fit_power_law(range(1, len(losses_by_k) + 1), losses_by_k).E
    except FitError:
        return float(losses_by_k[-1])


def best(curves: list[list[float]]) -> int:
    """The index of the box point whose ensemble has the lowest K-asymptote (ties: the earlier, the shift)."""
    scores = [k_asymptote(c) for c in curves]
    return min(range(len(curves)), key=lambda i: (scores[i], i))
