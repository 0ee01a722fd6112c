"""Power-law fits L(x) = A / x^alpha + E, whose asymptote E is the paper's figure of merit.

The fit is global, not local: for a fixed alpha the model is linear in (A, E), so the least-squares cost
profiled over alpha is a 1-D function; it is scanned on a fine grid, refined by golden section, then
polished with scipy's least_squares from that point and from several other starts (the paper's
p0 [1, 0.5, 2] among them), and the lowest cost kept. The bootstrap reuses the profile, vectorised over
resamples, so hundreds of resamples take milliseconds.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares

from megarecipe import errors

ALPHA_MAX = 5.0
PAPER_P0 = (1.0, 0.5, 2.0)
_ALPHA_GRID = np.geomspace(1e-3, ALPHA_MAX, 400)
_GOLDEN = (math.sqrt(5) - 1) / 2
_CHUNK = 50  # bootstrap resamples per vectorised step (and per progress-bar tick)


class FitError(errors.UserError):
    """A fit that cannot be made from the points given; the message is one line."""


@dataclass
class Point:
    x: float
    loss: float
    source: str = ""  # the run (or table row) the point came from
    boot: np.ndarray | None = field(default=None, compare=False, repr=False)  # (B,) its loss in each resample


@dataclass
class PowerLaw:
    A: float
    alpha: float
    E: float
    x: np.ndarray
    y: np.ndarray
    loss: str = "lsq"
    cost: float = 0.0  # the objective minimised: 0.5 * sum of squared (or Huber) residuals
    ci: dict = field(default_factory=dict)  # name -> (low, high) at `level`
    level: float = 0.95
    boot: np.ndarray | None = None  # (B, 3) bootstrap samples of (A, alpha, E)
    sources: list = field(default_factory=list)  # per point, where it came from
    dropped: list = field(default_factory=list)  # Points not used because another run at the same x did better
    notes: list = field(default_factory=list)

    def __call__(self, x):
        return self.A / np.asarray(x, dtype=float) ** self.alpha + self.E

    def inverse(self, loss: float) -> float:
        """The x at which the curve reaches `loss`; inf when loss is at or below the asymptote."""
        return _inverse(self.A, self.alpha, self.E, loss)

    @property
    def residuals(self) -> np.ndarray:
        return self.y - self(self.x)

    @property
    def rmse(self) -> float:
        return float(np.sqrt(np.mean(self.residuals**2)))

    def formula(self, digits: int = 4) -> str:
        return f"L(x) = {self.A:.{digits}g} / x^{self.alpha:.{digits}g} + {self.E:.{digits}f}"

    def to_dict(self) -> dict:
        return {
            "A": self.A,
            "alpha": self.alpha,
            "E": self.E,
            "loss": self.loss,
            "cost": self.cost,
            "rmse": self.rmse,
            "level": self.level,
            "ci": {k: list(v) for k, v in self.ci.items()},
            "bootstrap_resamples": 0 if self.boot is None else len(self.boot),
            "points": [
                {"x": float(x), "loss": float(y), "fitted": float(self(x)), "residual": float(r), "source": s}
                for x, y, r, s in zip(self.x, self.y, self.residuals, self._sources(), strict=True)
            ],
            "dropped": [{"x": p.x, "loss": p.loss, "source": p.source} for p in self.dropped],
            "notes": list(self.notes),
        }

    def _sources(self):
        return self.sources if len(self.sources) == len(self.x) else [""] * len(self.x)


def _inverse(A, alpha, E, loss):
    A, alpha, E = (np.asarray(v, dtype=float) for v in (A, alpha, E))
    gap = loss - E
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        d = np.where(gap > 0, (A / np.where(gap > 0, gap, 1.0)) ** (1.0 / alpha), np.inf)
    return float(d) if d.ndim == 0 else d


def check_points(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise FitError(f"x and loss differ in length ({len(x)} vs {len(y)})")
    bad = ~np.isfinite(x) | ~np.isfinite(y)
    if bad.any():
        i = int(np.argmax(bad))
        raise FitError(f"non-finite point (x={x[i]:g}, loss={y[i]:g}); remove it first")
    if (x <= 0).any():
        raise FitError(f"x must be > 0 for a power law; got x = {x[x <= 0][0]:g}")
    if (y < 0).any():  # a cross-entropy is never negative, and the fit's E >= 0 would hide it
        i = int(np.argmax(y < 0))
        raise FitError(
            f"loss must be >= 0 (a cross-entropy); got loss = {y[i]:g} at x = {x[i]:g}; remove that "
            f"point or fix its loss"
        )
    distinct = np.unique(x)
    if len(distinct) < 3:
        shown = ", ".join(f"{v:g}" for v in distinct)
        raise FitError(
            f"need at least 3 distinct x values to fit A / x^alpha + E, got {len(distinct)}"
            + (f" ({shown})" if shown else "")
        )
    return x, y


def best_per_x(points: list[Point], rel_tol: float = 1e-6) -> tuple[list[Point], list[Point]]:
    """The lowest-loss point at each x (a sweep's best run), sorted by x; and the points left out."""
    chosen, dropped = [], []
    for p in sorted(points, key=lambda p: p.x):
        if chosen and math.isclose(p.x, chosen[-1].x, rel_tol=rel_tol):
            if p.loss < chosen[-1].loss:
                dropped.append(chosen[-1])
                chosen[-1] = p
            else:
                dropped.append(p)
        else:
            chosen.append(p)
    return chosen, dropped


def _profile(lx, Y, W, alphas):
    """Least squares over (A >= 0, E >= 0) at fixed alpha, for every row of Y/W and every alpha.

    lx: (n,) log x; Y, W: (B, n) losses and point weights; alphas: (G,) or (B, G).
    Returns A, E, rss, each (B, G).
    """
    alphas = np.asarray(alphas, dtype=float)
    a = alphas[None, :, None] if alphas.ndim == 1 else alphas[:, :, None]
    u = np.exp(-a * lx)  # x^-alpha: (1 or B, G, n)
    y, w = Y[:, None, :], W[:, None, :]
    sw = w.sum(-1)
    mu, my = (w * u).sum(-1) / sw, (w * y).sum(-1) / sw
    du, dy = u - mu[..., None], y - my[..., None]
    var = (w * du * du).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        A_free = np.where(var > 0, (w * du * dy).sum(-1) / var, 0.0)
        A_edge = np.maximum((w * u * y).sum(-1) / (w * u * u).sum(-1), 0.0)
    E_free = my - A_free * mu
    candidates = [(A_free, E_free), (np.zeros_like(my), np.maximum(my, 0.0)), (A_edge, np.zeros_like(my))]
    best = None
    for A, E in candidates:  # convex in (A, E): the feasible free optimum, else the best edge
        rss = (w * (y - A[..., None] * u - E[..., None]) ** 2).sum(-1)
        if A is A_free:
            rss = np.where((A_free >= 0) & (E_free >= 0), rss, np.inf)
        if best is None:
            best = [A, E, rss]
        else:
            take = rss < best[2]
            best = [np.where(take, A, best[0]), np.where(take, E, best[1]), np.where(take, rss, best[2])]
    return best


def _profile_fit(lx, Y, W, alpha_max=ALPHA_MAX, iters=40):
    """Global least-squares (A, alpha, E) per row: grid over alpha, then golden section in the bracket."""
    grid = _ALPHA_GRID[_ALPHA_GRID <= alpha_max]
    rss = _profile(lx, Y, W, grid)[2]
    i = np.argmin(rss, axis=1)
    lo, hi = grid[np.maximum(i - 1, 0)], grid[np.minimum(i + 1, len(grid) - 1)]
    lo = np.where(i == 0, 0.0, lo)
    rows = np.arange(len(Y))

    def f(a):
        return _profile(lx, Y, W, a[:, None])[2][:, 0]

    c, d = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
    fc, fd = f(c), f(d)
    for _ in range(iters):
        left = fc < fd
        hi, lo = np.where(left, d, hi), np.where(left, lo, c)
        new = np.where(left, hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo))
        fn = f(new)
        c, d, fc, fd = (np.where(left, new, d), np.where(left, c, new), np.where(left, fn, fd), np.where(left, fc, fn))
    alpha = np.where(fc < fd, c, d)
    # keep the grid point if refinement did not beat it (flat or edge cases)
    grid_rss = rss[rows, i]
    ref = _profile(lx, Y, W, alpha[:, None])
    take = ref[2][:, 0] <= grid_rss
    alpha = np.where(take, alpha, grid[i])
    A, E, _ = _profile(lx, Y, W, alpha[:, None])
    return A[:, 0], alpha, E[:, 0]


def _huber_start(lx, Y, W, delta, alpha_max=ALPHA_MAX, steps=3):
    """A start for Huber fits, per row: a few steps of iteratively reweighted least squares (weights
    min(1, delta/|r|)), each solved globally over alpha, so the start lies in the right basin. IRLS alone
    converges too slowly to finish the job; least_squares does that."""
    A, a, E = _profile_fit(lx, Y, W, alpha_max)
    for _ in range(steps):
        r = Y - (A[:, None] * np.exp(-a[:, None] * lx) + E[:, None])
        w = np.minimum(1.0, delta / np.maximum(np.abs(r), 1e-300))
        if np.all(w == 1.0):
            break
        A, a, E = _profile_fit(lx, Y, W * w, alpha_max)
    return A, a, E


def _polish(x, y, starts, loss, f_scale, alpha_max):
    lx = np.log(x)

    def resid(p):
        return p[0] * np.exp(-p[1] * lx) + p[2] - y

    def jac(p):
        u = np.exp(-p[1] * lx)
        return np.stack([u, -p[0] * lx * u, np.ones_like(u)], axis=1)

    lower, upper = np.zeros(3), np.array([np.inf, alpha_max, np.inf])
    best = None
    for p0 in starts:
        p0 = np.clip(np.asarray(p0, dtype=float), 1e-9, [np.inf, alpha_max - 1e-9, np.inf])
        try:
            r = least_squares(
                resid,
                p0,
                jac=jac,
                bounds=(lower, upper),
                loss=loss,
                f_scale=f_scale,
                x_scale="jac",
                xtol=1e-12,
                ftol=1e-12,
                gtol=1e-12,
                max_nfev=2000,
            )
        except (ValueError, FloatingPointError):
            continue
        if np.all(np.isfinite(r.x)) and (best is None or r.cost < best.cost):
            best = r
    return best


def _cost(p, x, y, loss, f_scale):
    r = p[0] * x ** -p[1] + p[2] - y
    if loss == "huber":
        z = (r / f_scale) ** 2
        return 0.5 * f_scale**2 * float(np.sum(np.where(z <= 1, z, 2 * np.sqrt(z) - 1)))
    return 0.5 * float(r @ r)


def fit_power_law(
    x,
    y,
    loss: str = "lsq",
    huber_delta: float = 0.01,
    n_boot: int = 0,
    level: float = 0.95,
    seed: int = 0,
    alpha_max: float = ALPHA_MAX,
    y_boot=None,
    progress: bool = False,
    resample_points: bool = True,
) -> PowerLaw:
    """Fit L(x) = A / x^alpha + E with A, alpha, E >= 0 (alpha <= alpha_max).

    loss: "lsq" (least squares on the raw loss, as the paper) or "huber" (robust; huber_delta is the residual
    at which it turns linear). n_boot > 0 adds percentile bootstrap intervals (resampling points) for A,
    alpha and E. y_boot, (n_boot, n), gives each resample its own losses (a previous stage's bootstrap).
    resample_points=False keeps every point in every resample (a fixed design: the x were chosen, not drawn),
    so only y_boot varies: the interval is that of the losses' noise alone. It needs y_boot.
    """
    if loss not in ("lsq", "huber"):
        raise FitError(f"unknown loss {loss!r}; use 'lsq' or 'huber'")
    x, y = check_points(x, y)
    lx = np.log(x)
    ones = np.ones((1, len(x)))
    A0, a0, E0 = (float(v[0]) for v in _profile_fit(lx, y[None], ones, alpha_max))
    starts = [(A0, a0, E0), PAPER_P0]
    if loss == "huber":
        A0, a0, E0 = (float(v[0]) for v in _huber_start(lx, y[None], ones, huber_delta, alpha_max))
        starts.insert(0, (A0, a0, E0))
    for a in (0.1, 0.3, 1.0, 2.0):
        A, E, _ = _profile(lx, y[None], np.ones((1, len(x))), np.array([min(a, alpha_max)]))
        starts.append((float(A[0, 0]), a, float(E[0, 0])))
    f_scale = huber_delta if loss == "huber" else 1.0
    best = _polish(x, y, starts, "huber" if loss == "huber" else "linear", f_scale, alpha_max)
    p = np.array([A0, a0, E0])
    if best is not None and _cost(best.x, x, y, loss, f_scale) <= _cost(p, x, y, loss, f_scale):
        p = best.x
    fit = PowerLaw(
        A=float(p[0]),
        alpha=float(p[1]),
        E=float(p[2]),
        x=x,
        y=y,
        loss=loss,
        cost=_cost(p, x, y, loss, f_scale),
        level=level,
    )
    if fit.alpha >= alpha_max * (1 - 1e-6):
        fit.notes.append(f"alpha at its upper bound {alpha_max:g}: the points barely constrain the curve")
    if fit.A <= 1e-12:
        fit.notes.append("A = 0: the points are flat, so E is their mean and alpha is arbitrary")
    if len(np.unique(x)) == 3:
        fit.notes.append(
            "3 points for 3 parameters: the curve interpolates, so nothing checks the form"
            + (
                ""
                if not resample_points
                else ", and bootstrap intervals are narrow only because resamples must keep 3 distinct x"
            )
        )
    if n_boot:
        fit.boot = bootstrap(
            fit,
            n_boot,
            seed=seed,
            loss=loss,
            huber_delta=huber_delta,
            alpha_max=alpha_max,
            y_boot=y_boot,
            progress=progress,
            resample_points=resample_points,
        )
        fit.ci = {name: interval(fit.boot[:, j], level) for j, name in enumerate(("A", "alpha", "E"))}
    return fit


def resample_weights(x, n_boot: int, rng) -> np.ndarray:
    """(n_boot, n) multiplicities of points drawn with replacement, each draw keeping >= 3 distinct x."""
    n = len(x)
    _, group = np.unique(x, return_inverse=True)
    W = np.zeros((n_boot, n))
    todo = np.arange(n_boot)
    for _ in range(1000):
        idx = rng.integers(0, n, size=(len(todo), n))
        W[todo] = 0
        np.add.at(W, (np.repeat(todo, n), idx.ravel()), 1.0)
        per_x = np.zeros((len(todo), group.max() + 1))
        np.add.at(per_x, (np.repeat(np.arange(len(todo)), n), group[idx].ravel()), 1.0)
        todo = todo[(per_x > 0).sum(1) < 3]
        if not len(todo):
            return W
    raise FitError("could not draw bootstrap resamples with 3 distinct x")


def bootstrap(
    fit: PowerLaw,
    n_boot: int,
    seed: int = 0,
    loss: str = "lsq",
    huber_delta: float = 0.01,
    alpha_max: float = ALPHA_MAX,
    y_boot=None,
    progress: bool = False,
    resample_points: bool = True,
) -> np.ndarray:
    """(n_boot, 3) refits of (A, alpha, E) on resampled points (every point each time: resample_points=False)."""
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    x, lx = fit.x, np.log(fit.x)
    if not resample_points and y_boot is None:
        raise FitError("a fixed-design bootstrap (resample_points=False) needs each resample's losses (y_boot)")
    W = resample_weights(x, n_boot, rng) if resample_points else np.ones((n_boot, len(x)))
    Y = np.broadcast_to(fit.y, W.shape) if y_boot is None else np.asarray(y_boot, dtype=float)
    if Y.shape != W.shape:
        raise FitError(f"y_boot has shape {Y.shape}, expected {W.shape}")
    out = np.empty((n_boot, 3))
    with tqdm(
        total=n_boot, desc="bootstrap", unit="fit", file=sys.stderr, disable=not progress, leave=False, delay=0.5
    ) as bar:
        for s in range(0, n_boot, _CHUNK):
            rows = slice(s, min(s + _CHUNK, n_boot))
            if loss == "huber":
                out[rows] = np.stack(_huber_start(lx, Y[rows], W[rows], huber_delta, alpha_max), axis=1)
                for b in range(rows.start, rows.stop):
                    idx = np.repeat(np.arange(len(x)), W[b].astype(int))
                    r = _polish(x[idx], Y[b, idx], [out[b]], "huber", huber_delta, alpha_max)
                    if r is not None:
                        out[b] = r.x
            else:
                out[rows] = np.stack(_profile_fit(lx, Y[rows], W[rows], alpha_max), axis=1)
            bar.update(rows.stop - rows.start)
    return out


def interval(samples, level: float = 0.95) -> tuple[float, float]:
    s = np.asarray(samples, dtype=float)
    q = [(1 - level) / 2, (1 + level) / 2]
    method = "linear" if np.all(np.isfinite(s)) else "nearest"  # inf - inf would make nan
    lo, hi = np.quantile(s, q, method=method)
    return float(lo), float(hi)


def fit_points(points: list[Point], **kw) -> PowerLaw:
    """Best point per x, then fit_power_law; the fit records which run each point came from. When every chosen
    point carries its per-resample losses (`Point.boot`), the bootstrap refits those (its y_boot)."""
    chosen, dropped = best_per_x(points)
    if kw.get("n_boot") and chosen and all(p.boot is not None for p in chosen) and kw.get("y_boot") is None:
        kw["y_boot"] = np.stack([p.boot for p in chosen], axis=1)
    fit = fit_power_law([p.x for p in chosen], [p.loss for p in chosen], **kw)
    fit.sources = [p.source for p in chosen]
    fit.dropped = dropped
    return fit


@dataclass
class Joint:
    """The paper's order: fit L(K) per N and take E_N, then fit E_N over N and take E."""

    per_n: dict  # N -> PowerLaw over members K
    over_n: PowerLaw  # E_N over N

    @property
    def E(self) -> float:
        return self.over_n.E


def joint_asymptote(curves: dict, n_boot: int = 0, seed: int = 0, progress: bool = False, **kw) -> Joint:
    """curves: N -> list of Points over K (several per K allowed: the best is used), or N -> its L(K) fitted
    already (a PowerLaw, used as it is).

    With n_boot, each stage-2 resample fits the stage-1 bootstrap asymptotes, so the interval on E carries
    both stages' uncertainty; a stage-1 fit without bootstrap samples leaves stage 2 without an interval.
    """
    if len(curves) < 3:
        raise FitError(
            f"the joint asymptote needs ensembles at >= 3 model sizes, got {len(curves)}"
            + (f" ({', '.join(f'{n:g}' for n in sorted(curves))})" if curves else "")
        )
    per_n = {}
    for i, n in enumerate(sorted(curves)):
        if isinstance(curves[n], PowerLaw):
            per_n[n] = curves[n]
            continue
        try:
            per_n[n] = fit_points(curves[n], n_boot=n_boot, seed=seed + 1 + i, progress=progress, **kw)
        except FitError as e:
            raise FitError(f"N = {n:g}: {e}") from None
    sizes = list(per_n)
    if any(per_n[n].boot is None for n in sizes):
        n_boot = 0
    y_boot = np.stack([per_n[n].boot[:, 2] for n in sizes], axis=1) if n_boot else None
    over_n = fit_power_law(
        sizes, [per_n[n].E for n in sizes], n_boot=n_boot, seed=seed, y_boot=y_boot, progress=progress, **kw
    )
    over_n.sources = [f"E_N of N = {n:g}" for n in sizes]
    return Joint(per_n, over_n)


@dataclass
class Efficiency:
    """How much more data the baseline would need to reach the recipe's loss."""

    baseline: PowerLaw  # baseline loss over unique tokens D (billions)
    reference: float  # the budget (billions) the recipe was run at
    recipe_loss: float
    value: float
    ci: tuple | None = None
    level: float = 0.95
    reference_loss: float | None = None  # the baseline's loss at the reference: measured, or None for the law's

    @property
    def tokens_needed(self) -> float:
        return self.baseline.inverse(self.recipe_loss)

    def to_dict(self) -> dict:
        def fin(v):
            return v if v is not None and math.isfinite(v) else None

        return {
            "efficiency": fin(self.value),
            "ci": None if self.ci is None else [fin(v) for v in self.ci],
            "level": self.level,
            "recipe_loss": self.recipe_loss,
            "reference_tokens_billions": self.reference,
            "baseline_loss_at_reference": float(self.baseline(self.reference)),
            "reference_loss": self.reference_loss,
            "baseline_tokens_needed_billions": fin(self.tokens_needed),
            "baseline": self.baseline.to_dict(),
            "note": None
            if math.isfinite(self.value)
            else "the recipe's loss is at or below the baseline's asymptote: no finite budget reaches it",
        }


def data_efficiency(
    baseline: PowerLaw,
    recipe_loss: float,
    reference: float,
    recipe_boot=None,
    level: float = 0.95,
    reference_loss: float | None = None,
    reference_boot=None,
) -> Efficiency:
    """D_base(L_recipe) / D_base(L_ref), D_base inverting the baseline's data law.

    L_ref: `reference_loss`, the baseline's measured loss at the reference budget (the paper's: its best run
    there), or the law's own value at `reference` when None. recipe_boot and reference_boot: bootstrap samples of
    the two losses, paired with baseline.boot for the interval.
    """
    if not reference > 0:
        raise FitError(f"the reference budget must be > 0, got {reference:g}")
    ref_loss = float(baseline(reference)) if reference_loss is None else float(reference_loss)
    value = baseline.inverse(recipe_loss) / baseline.inverse(ref_loss)
    ci = None
    if baseline.boot is not None:
        A, a, E = baseline.boot.T
        L = recipe_loss if recipe_boot is None else np.asarray(recipe_boot, dtype=float)
        if reference_boot is not None:
            base_ref = np.asarray(reference_boot, dtype=float)
        else:
            base_ref = A / reference**a + E if reference_loss is None else ref_loss
        with np.errstate(invalid="ignore"):
            ratio = _inverse(A, a, E, L) / _inverse(A, a, E, base_ref)
        ci = interval(np.where(np.isnan(ratio), np.inf, ratio), level)
    return Efficiency(
        baseline, reference, float(recipe_loss), float(value), ci, level, None if reference_loss is None else ref_loss
    )
