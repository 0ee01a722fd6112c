"""Coordinate descent on a grid to a locally optimal point, over any objective.

From a centre, evaluate it and its neighbours one grid step either way in each coordinate (up to 2 per
coordinate; none past a grid's edge; none for a coordinate with one value), all in one batch; move to the
best; stop when the centre is at least as good as every neighbour. That point carries a local-optimality
certificate: its neighbours' losses. Every move strictly lowers the loss, so the search ends, and no point is
evaluated twice. A point whose evaluation fails (loss None or not finite) is never chosen.

The objective is a callback over a batch of points, `evaluate([{name: value}, ...]) -> [loss or None, ...]`,
so the same search drives real training runs (megarecipe/recipes/sweep.py) and tests' synthetic functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from megarecipe import errors

# The paper's grids.
EPOCHS = (1, 2, 4, 8, 16, 32, 64)
LR = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
WEIGHT_DECAY = (0.0, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8)
STANDARD_WEIGHT_DECAY = 0.1


class SearchError(errors.UserError):
    """The search cannot go on (every point of a round failed, a bad grid); one line."""


@dataclass(frozen=True)
class Grid:
    names: tuple[str, ...]
    values: tuple[tuple[float, ...], ...]  # each sorted ascending, no repeats

    def __post_init__(self):
        for name, vals in zip(self.names, self.values, strict=True):
            if not vals or list(vals) != sorted(set(vals)):
                raise SearchError(f"grid {name}: {list(vals)} must be non-empty, ascending, without repeats")

    def at(self, point: tuple[int, ...]) -> dict:
        return {n: v[i] for n, v, i in zip(self.names, self.values, point, strict=True)}

    def size(self) -> int:
        return math.prod(len(v) for v in self.values)

    def snap(self, values: dict) -> tuple[int, ...]:
        """The grid point nearest to `values` (in log space; 0 is its own value)."""
        return tuple(nearest(vals, values[name]) for name, vals in zip(self.names, self.values, strict=True))

    def neighbours(self, point: tuple[int, ...]) -> list[tuple[tuple[int, ...], str, int]]:
        """(point, coordinate name, -1 or +1) for each neighbour inside the grid."""
        out = []
        for k, name in enumerate(self.names):
            for step in (-1, 1):
                i = point[k] + step
                if 0 <= i < len(self.values[k]):
                    out.append((point[:k] + (i,) + point[k + 1 :], name, step))
        return out


def nearest(values, v: float) -> int:
    def distance(g):
        if g == v:
            return 0.0
        if g <= 0 or v <= 0:
            return math.inf if max(g, v) > 0.05 else abs(g - v)
        return abs(math.log(g / v))

    return min(range(len(values)), key=lambda i: (distance(values[i]), i))


@dataclass
class Round:
    centre: tuple[int, ...]
    losses: dict  # point -> loss (None: failed), the centre and its neighbours
    best: tuple[int, ...]


@dataclass
class SearchResult:
    grid: Grid
    centre: tuple[int, ...]
    loss: float
    neighbours: list  # (point, coordinate, step, loss or None)
    rounds: list[Round] = field(default_factory=list)
    evaluated: dict = field(default_factory=dict)  # every point evaluated -> loss (None: failed)

    @property
    def values(self) -> dict:
        return self.grid.at(self.centre)


def ok(loss) -> bool:
    return loss is not None and math.isfinite(loss)


def coordinate_descent(
    grid: Grid, start: tuple[int, ...], evaluate, on_round=None, max_rounds: int = 1000
) -> SearchResult:
    """Search from `start` (grid indices). evaluate(list of value dicts) -> list of losses (None: failed)."""
    cache: dict = {}
    centre, rounds = tuple(start), []
    for _ in range(max_rounds):
        near = grid.neighbours(centre)
        batch = [centre] + [p for p, _, _ in near]
        todo = [p for p in batch if p not in cache]
        if todo:
            losses = list(evaluate([grid.at(p) for p in todo]))
            if len(losses) != len(todo):
                raise SearchError(f"the objective returned {len(losses)} losses for {len(todo)} points")
            cache.update(zip(todo, (float(x) if ok(x) else None for x in losses), strict=True))
        good = [p for p in batch if ok(cache[p])]
        if not good:
            raise SearchError(f"every run around {grid.at(centre)} failed; see their train.log files")
        best = min(good, key=lambda p: (cache[p], p != centre))  # ties keep the centre, then batch order
        rounds.append(Round(centre, {p: cache[p] for p in batch}, best))
        if on_round:
            on_round(rounds[-1])
        if best == centre:
            return SearchResult(
                grid, centre, cache[centre], [(p, n, s, cache[p]) for p, n, s in near], rounds, dict(cache)
            )
        centre = best
    raise SearchError(f"no certified point after {max_rounds} rounds")
