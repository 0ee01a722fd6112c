"""Coordinate descent against synthetic objectives whose local optima are known."""

import math

import pytest

from megarecipe.recipes.search import EPOCHS, LR, WEIGHT_DECAY, Grid, SearchError, coordinate_descent, nearest

PAPER = Grid(("epochs", "lr", "weight_decay"), (EPOCHS, LR, WEIGHT_DECAY))


def bowl(best):
    """Convex in log space with its minimum at the grid point `best` (values)."""

    def loss(p):
        return 3 + sum(math.log((p[k] + 0.05) / (best[k] + 0.05)) ** 2 for k in best)

    return loss


class Counter:
    def __init__(self, fn):
        self.fn, self.calls, self.batches = fn, [], []

    def __call__(self, points):
        self.batches.append(len(points))
        self.calls.extend(tuple(sorted(p.items())) for p in points)
        return [self.fn(p) for p in points]


def local_minimum(grid, fn, point):
    here = fn(grid.at(point))
    return all(fn(grid.at(p)) >= here for p, _, _ in grid.neighbours(point))


def test_interior_optimum_from_a_far_start():
    best = {"epochs": 16, "lr": 3e-3, "weight_decay": 0.8}
    f = Counter(bowl(best))
    res = coordinate_descent(PAPER, PAPER.snap({"epochs": 1, "lr": 1e-4, "weight_decay": 12.8}), f)
    assert res.values == best and len(res.neighbours) == 6
    assert all(loss > res.loss for *_, loss in res.neighbours)
    assert len(f.calls) == len(set(f.calls)), "a point was evaluated twice"
    assert max(f.batches) <= 7 and len(f.calls) < PAPER.size() / 4


def test_optimum_on_a_grid_edge_has_fewer_neighbours():
    best = {"epochs": 64, "lr": 1e-4, "weight_decay": 0.0}
    res = coordinate_descent(PAPER, PAPER.snap({"epochs": 8, "lr": 3e-3, "weight_decay": 0.8}), Counter(bowl(best)))
    assert res.values == best
    assert sorted((n, s) for _, n, s, _ in res.neighbours) == [("epochs", -1), ("lr", 1), ("weight_decay", 1)]


def test_a_tie_with_the_centre_stops_there_and_a_fixed_coordinate_has_no_neighbours():
    grid = Grid(("lr", "weight_decay"), (LR, (0.1,)))
    flat = coordinate_descent(grid, (2, 0), lambda pts: [1.0 for _ in pts])  # every point ties
    assert flat.centre == (2, 0) and len(flat.rounds) == 1 and len(flat.neighbours) == 2


def test_a_failing_point_is_never_chosen_and_is_reported():
    best = {"lr": 3e-3, "weight_decay": 0.1}
    f = bowl(best)
    grid = Grid(("lr", "weight_decay"), (LR, (0.1,)))
    start = grid.snap({"lr": 1e-2, "weight_decay": 0.1})
    res = coordinate_descent(grid, start, lambda pts: [None if p["lr"] == 3e-3 else f(p) for p in pts])
    assert res.values["lr"] in (1e-3, 1e-2)
    assert any(loss is None for *_, loss in res.neighbours)
    from megarecipe.recipes import certificate  # the certificate says which neighbours it could not compare

    names = {p: f"run{i}" for i, p in enumerate(res.evaluated)}
    cert = certificate.build(res, names, None, len(res.evaluated))
    assert not cert["certified"] and len(cert["failed"]) == 1  # a failed neighbour cannot vouch for the centre
    text = certificate.markdown(cert)
    assert "NOT certified: 1 neighbour(s) failed" in text
    with pytest.raises(SearchError, match="failed"):
        coordinate_descent(grid, (2, 0), lambda pts: [math.nan for _ in pts])


def test_a_centre_on_the_grids_edge_is_flagged():
    from megarecipe.recipes import certificate

    best = {"epochs": 64, "lr": 1e-4, "weight_decay": 0.0}
    res = coordinate_descent(
        PAPER, PAPER.snap({"epochs": 8, "lr": 3e-3, "weight_decay": 0.8}), lambda pts: [bowl(best)(p) for p in pts]
    )
    cert = certificate.build(res, {p: f"run{i}" for i, p in enumerate(res.evaluated)}, None, len(res.evaluated))
    assert cert["certified"] and cert["edge"] == ["epochs high", "LR low", "WD low"]
    assert "on the grid's edge (epochs high, LR low, WD low)" in certificate.markdown(cert)
    inner = coordinate_descent(
        PAPER,
        PAPER.snap({"epochs": 8, "lr": 3e-3, "weight_decay": 0.8}),
        lambda pts: [bowl({"epochs": 16, "lr": 3e-3, "weight_decay": 0.8})(p) for p in pts],
    )
    assert certificate.build(inner, {p: "r" for p in inner.evaluated}, None, 1)["edge"] == []


def test_two_local_optima_stops_at_a_certified_one():
    grid = Grid(("lr", "weight_decay"), (LR, WEIGHT_DECAY))
    a, b = bowl({"lr": 1e-4, "weight_decay": 0.0}), bowl({"lr": 3e-2, "weight_decay": 12.8})

    def two_valleys(p):
        return min(a(p), b(p) - 0.5)  # b's valley is deeper, a's is only local

    for start in ({"lr": 3e-4, "weight_decay": 0.1}, {"lr": 1e-2, "weight_decay": 3.2}):
        res = coordinate_descent(grid, grid.snap(start), lambda pts: [two_valleys(p) for p in pts])
        assert local_minimum(grid, two_valleys, res.centre)
    near_a = coordinate_descent(
        grid, grid.snap({"lr": 3e-4, "weight_decay": 0.1}), lambda pts: [two_valleys(p) for p in pts]
    )
    assert near_a.values == {"lr": 1e-4, "weight_decay": 0.0}  # local, not global: what the paper certifies


def test_snap_and_bad_grids():
    assert PAPER.at(PAPER.snap({"epochs": 10, "lr": 2e-3, "weight_decay": 0.0})) == {
        "epochs": 8,
        "lr": 3e-3,
        "weight_decay": 0.0,
    }
    assert WEIGHT_DECAY[nearest(WEIGHT_DECAY, 0.01)] == 0.0 and WEIGHT_DECAY[nearest(WEIGHT_DECAY, 0.09)] == 0.1
    with pytest.raises(SearchError, match="ascending"):
        Grid(("lr",), ((3e-3, 1e-3),))
