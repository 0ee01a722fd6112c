import json
import math

import numpy as np
import pytest
from scipy.optimize import curve_fit, nnls

from megarecipe.analysis.fit import (
    FitError,
    Point,
    PowerLaw,
    best_per_x,
    bootstrap,
    data_efficiency,
    fit_points,
    fit_power_law,
    interval,
    joint_asymptote,
)
from megarecipe.analysis.report import MISSING, number, to_jsonable
from tests.helpers import PAPER_K_ASYMPTOTES, PAPER_SIZES


def law(x, A, alpha, E):
    return A / np.asarray(x, dtype=float) ** alpha + E


ALPHAS = np.linspace(1e-3, 5, 20001)


def brute_force_rss(x, y, alphas=ALPHAS):
    """Least squares by exhaustion over alpha, with scipy's NNLS for (A, E) >= 0 at each alpha."""
    best = math.inf
    for a in alphas:
        M = np.stack([x**-a, np.ones_like(x)], axis=1)
        _, r = nnls(M, y)
        best = min(best, r * r)
    return best


@pytest.mark.parametrize(
    "A, alpha, E, noise, seed",
    [
        (0.05, 1.02, 3.43, 0.002, 0),  # the paper's regularized L(N) at 200M
        (0.30, 0.45, 2.90, 0.004, 1),
        (1.20, 0.23, 2.60, 0.003, 2),  # a data law's shape, alpha ~ 0.23
    ],
)
def test_recovers_known_law_from_noisy_points(A, alpha, E, noise, seed):
    rng = np.random.default_rng(seed)
    x = np.geomspace(0.1, 3.2, 10)
    y = law(x, A, alpha, E) + rng.normal(0, noise, x.size)
    fit = fit_power_law(x, y, n_boot=100, seed=seed)
    # tolerances: several noise-sigmas on E (weakly pinned when alpha is small), alpha to 25%
    assert fit.E == pytest.approx(E, abs=0.1 if alpha < 0.3 else 0.02)
    assert fit.alpha == pytest.approx(alpha, rel=0.25)
    assert fit.rmse < 2 * noise
    lo, hi = fit.ci["E"]
    assert lo <= fit.E <= hi and hi > lo
    assert fit.residuals == pytest.approx(y - fit(x))


def test_noise_free_points_give_the_law_exactly():
    x = np.array([1.0, 2, 3, 4, 5])
    fit = fit_power_law(x, law(x, 0.25, 0.9, 3.273))
    assert (fit.A, fit.alpha, fit.E) == pytest.approx((0.25, 0.9, 3.273), rel=1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_fit_is_the_global_least_squares_optimum(seed):
    rng = np.random.default_rng(100 + seed)
    x = np.geomspace(0.15, 1.5, int(rng.integers(4, 8)))
    y = law(x, rng.uniform(0.01, 0.5), rng.uniform(0.2, 2.0), rng.uniform(2.5, 3.5)) + rng.normal(0, 0.01, x.size)
    fit = fit_power_law(x, y)
    rss = float(np.sum(fit.residuals**2))
    assert rss <= brute_force_rss(x, y) * (1 + 1e-6) + 1e-14
    # and never worse than the paper's single curve_fit from p0 [1, 0.5, 2]
    try:
        p, _ = curve_fit(law, x, y, p0=[1, 0.5, 2], bounds=([0, 0, 0], [np.inf, 5, np.inf]), maxfev=20000)
        assert rss <= np.sum((y - law(x, *p)) ** 2) * (1 + 1e-9) + 1e-14
    except RuntimeError:
        pass


N_PAPER = np.array(sorted(PAPER_SIZES.values())) / 1e9


@pytest.mark.parametrize(
    "x, y",
    [
        (N_PAPER, [3.8375, 3.7854, 3.7497, 3.7643]),  # the paper's standard recipe: not monotone
        (N_PAPER, 3.5 - 0.1 * np.log(N_PAPER)),  # log-linear: the optimum sits on the bound E = 0
        ([1.0, 2, 3, 4, 5], [5.0, 3.3, 3.21, 3.2, 3.2]),  # steep: alpha near its cap
    ],
)
def test_global_optimum_on_awkward_data(x, y):
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    fit = fit_power_law(x, y)
    assert float(np.sum(fit.residuals**2)) <= brute_force_rss(x, y) * (1 + 1e-6) + 1e-14
    assert fit.E >= 0 and fit.A >= 0 and 0 <= fit.alpha <= 5


def test_bounds_hold_when_the_data_want_a_negative_asymptote():
    x = np.geomspace(0.1, 10, 6)
    fit = fit_power_law(x, law(x, 1.0, 0.3, 0.0) - 0.5)  # best unconstrained E would be -0.5
    assert fit.E >= 0 and fit.A >= 0 and 0 <= fit.alpha <= 5


def test_huber_resists_an_outlier():
    rng = np.random.default_rng(7)
    x = np.geomspace(0.1, 2, 9)
    y = law(x, 0.1, 0.8, 3.2) + rng.normal(0, 0.002, x.size)
    y[-2] += 0.15  # one diverged run
    lsq = fit_power_law(x, y)
    hub = fit_power_law(x, y, loss="huber", huber_delta=0.005, n_boot=20)
    assert abs(hub.E - 3.2) < 0.5 * abs(lsq.E - 3.2)
    assert abs(hub.E - 3.2) < 0.02
    assert hub.loss == "huber" and "E" in hub.ci


@pytest.mark.parametrize(
    "x, y, message",
    [
        ([1, 2], [3.0, 2.9], "at least 3 distinct x"),
        ([1, 1, 2, 2], [3.0, 2.9, 2.8, 2.7], r"got 2 \(1, 2\)"),
        ([0, 1, 2, 3], [3.0, 2.9, 2.8, 2.7], "x must be > 0"),
        ([-1, 1, 2, 3], [3.0, 2.9, 2.8, 2.7], "x must be > 0"),
        ([1, 2, 3], [3.0, float("nan"), 2.8], "non-finite"),
        ([1, 2, 3], [3.0, 2.9], "differ in length"),
        ([], [], "at least 3 distinct x"),
    ],
)
def test_degenerate_inputs_raise_one_line_fit_errors(x, y, message):
    with pytest.raises(FitError, match=message) as e:
        fit_power_law(x, y)
    assert "\n" not in str(e.value) and isinstance(e.value, ValueError)


def test_unknown_loss_is_refused():
    with pytest.raises(FitError, match="unknown loss"):
        fit_power_law([1, 2, 3], [3, 2, 1], loss="l1")


def test_three_points_interpolate_and_say_so():
    x = np.array([0.15, 0.3, 0.6])
    fit = fit_power_law(x, law(x, 0.05, 1.0, 3.4), n_boot=20)
    assert fit.rmse < 1e-6
    assert any("3 points for 3 parameters" in n for n in fit.notes)


def test_flat_points_fit_a_constant():
    fit = fit_power_law([1, 2, 3, 4], [3.0, 3.0, 3.0, 3.0])
    assert fit.E == pytest.approx(3.0) and fit.A == pytest.approx(0, abs=1e-9)


def test_best_per_x_keeps_the_lowest_loss_and_names_the_rest():
    pts = [
        Point(0.3, 3.60, "300m-lr1e-3"),
        Point(0.15, 3.80, "150m-a"),
        Point(0.3, 3.55, "300m-lr3e-3"),
        Point(0.15, 3.77, "150m-b"),
        Point(0.6, 3.50, "600m"),
        Point(0.3 * (1 + 1e-9), 3.58, "300m-wd"),
    ]
    chosen, dropped = best_per_x(pts)
    assert [p.source for p in chosen] == ["150m-b", "300m-lr3e-3", "600m"]
    assert sorted(p.source for p in dropped) == ["150m-a", "300m-lr1e-3", "300m-wd"]
    fit = fit_points(pts)
    assert fit.sources == ["150m-b", "300m-lr3e-3", "600m"]
    assert list(fit.y) == [3.77, 3.55, 3.50]
    assert {d["source"] for d in fit.to_dict()["dropped"]} == {"150m-a", "300m-lr1e-3", "300m-wd"}


def test_bootstrap_is_reproducible_and_centred_on_the_fit():
    rng = np.random.default_rng(3)
    x = np.geomspace(0.1, 2, 8)
    y = law(x, 0.2, 0.7, 3.0) + rng.normal(0, 0.005, x.size)
    fit = fit_power_law(x, y)
    a = bootstrap(fit, 64, seed=5)
    assert np.array_equal(a, bootstrap(fit, 64, seed=5))
    assert not np.array_equal(a, bootstrap(fit, 64, seed=6))
    assert np.median(a[:, 2]) == pytest.approx(fit.E, abs=0.03)
    with pytest.raises(FitError, match="y_boot has shape"):
        bootstrap(fit, 4, y_boot=np.ones((3, 8)))


def test_vectorised_bootstrap_matches_one_fit_per_resample():
    from megarecipe.analysis.fit import resample_weights

    rng = np.random.default_rng(11)
    x = np.geomspace(0.1, 2, 6)
    y = law(x, 0.2, 0.7, 3.0) + rng.normal(0, 0.01, x.size)
    fit = fit_power_law(x, y)
    boot = bootstrap(fit, 12, seed=9)
    W = resample_weights(x, 12, np.random.default_rng(9))
    for b in range(12):
        idx = np.repeat(np.arange(len(x)), W[b].astype(int))
        one = fit_power_law(x[idx], y[idx])
        rss_vec = np.sum((y[idx] - law(x[idx], *boot[b])) ** 2)
        assert rss_vec <= np.sum(one.residuals**2) * (1 + 1e-6) + 1e-12


def test_huber_bootstrap_reaches_each_resamples_optimum():
    from megarecipe.analysis.fit import resample_weights

    rng = np.random.default_rng(7)
    x = np.geomspace(0.1, 2, 9)
    y = law(x, 0.1, 0.8, 3.2) + rng.normal(0, 0.004, x.size)
    y[-2] += 0.15
    fit = fit_power_law(x, y, loss="huber", huber_delta=0.003)
    boot = bootstrap(fit, 16, seed=2, loss="huber", huber_delta=0.003)
    W = resample_weights(x, 16, np.random.default_rng(2))

    def huber_cost(p, xs, ys):
        r = np.abs(law(xs, *p) - ys)
        return np.sum(np.where(r <= 0.003, 0.5 * r**2, 0.003 * (r - 0.0015)))

    for b in range(16):
        idx = np.repeat(np.arange(len(x)), W[b].astype(int))
        one = fit_power_law(x[idx], y[idx], loss="huber", huber_delta=0.003)  # multi-start, per resample
        assert (
            huber_cost(boot[b], x[idx], y[idx])
            <= huber_cost((one.A, one.alpha, one.E), x[idx], y[idx]) * (1 + 1e-6) + 1e-15
        )


def test_interval_handles_infinite_samples():
    lo, hi = interval([1.0, 2.0, np.inf, np.inf], 0.9)
    assert lo < 2 and hi == math.inf
    lo, hi = interval(np.arange(101.0), 0.9)
    assert (lo, hi) == pytest.approx((5.0, 95.0))


def test_inverse_undoes_the_law():
    fit = PowerLaw(A=1.2, alpha=0.23, E=2.6, x=np.ones(3), y=np.ones(3))
    for d in (0.05, 0.2097, 1.0, 40.0):
        assert fit.inverse(float(fit(d))) == pytest.approx(d, rel=1e-9)
    assert fit.inverse(2.6) == math.inf and fit.inverse(2.0) == math.inf


def paper_curves(k_max=5, noise=0.0, seed=0):
    """Ensemble losses over K = 1..k_max per paper model size, with the paper's K-asymptotes."""
    rng = np.random.default_rng(seed)
    curves = {}
    for i, (name, n) in enumerate(PAPER_SIZES.items()):
        ks = np.arange(1, k_max + 1)
        loss = law(ks, 0.30 - 0.03 * i, 0.8 + 0.1 * i, PAPER_K_ASYMPTOTES[name]) + rng.normal(0, noise, ks.size)
        curves[n / 1e9] = [Point(float(k), float(v), f"{name} K={k}") for k, v in zip(ks, loss, strict=True)]
    return curves


def test_paper_joint_asymptote_is_about_3_17():
    joint = joint_asymptote(paper_curves(), n_boot=50)
    for (_, fit), name in zip(joint.per_n.items(), PAPER_K_ASYMPTOTES, strict=True):
        assert fit.E == pytest.approx(PAPER_K_ASYMPTOTES[name], abs=1e-4)
    assert joint.E == pytest.approx(3.17, abs=0.005)
    lo, hi = joint.over_n.ci["E"]
    assert lo < joint.E < hi
    # the paper's order: stage 2 is a fit of the stage-1 asymptotes over N (billions)
    direct = fit_power_law(list(joint.per_n), [f.E for f in joint.per_n.values()])
    assert direct.E == pytest.approx(joint.E, abs=1e-9)


def test_joint_interval_carries_stage_one_noise():
    quiet = joint_asymptote(paper_curves(noise=0.0), n_boot=60, seed=1)
    noisy = joint_asymptote(paper_curves(noise=0.01, seed=4), n_boot=60, seed=1)
    width = lambda j: j.over_n.ci["E"][1] - j.over_n.ci["E"][0]  # noqa: E731
    assert width(noisy) > width(quiet)


def test_points_carrying_their_resamples_are_refitted_as_given():
    """Point.boot (a seed-noise draw per resample, as the recipe's fits give) is the bootstrap's y_boot, in the
    order of the chosen points; a point left out at its x takes its draws with it."""
    rng = np.random.default_rng(3)
    x = [1.0, 2.0, 4.0, 8.0]
    y = [2.0 + 1.0 / v**0.5 for v in x]
    draws = [v + rng.normal(0, 0.01, 40) for v in y]
    pts = [Point(v, loss, f"r{i}", d) for i, (v, loss, d) in enumerate(zip(x, y, draws, strict=True))]
    worse = Point(2.0, y[1] + 1.0, "worse", np.full(40, 99.0))
    got = fit_points([pts[3], worse, *pts[:3]], n_boot=40, seed=5)
    want = fit_power_law(x, y, n_boot=40, seed=5, y_boot=np.stack(draws, axis=1))
    assert np.array_equal(got.boot, want.boot) and [p.source for p in got.dropped] == ["worse"]


def test_joint_takes_curves_fitted_already():
    curves = paper_curves(noise=0.01, seed=4)
    fitted = {n: fit_points(pts, n_boot=30, seed=1 + i) for i, (n, pts) in enumerate(sorted(curves.items()))}
    a, b = joint_asymptote(curves, n_boot=30, seed=0), joint_asymptote(fitted, n_boot=30, seed=0)
    assert all(b.per_n[n] is fitted[n] for n in fitted) and b.E == a.E and b.over_n.ci == a.over_n.ci
    plain = {n: fit_points(pts) for n, pts in curves.items()}  # no stage-1 samples: no stage-2 interval
    assert joint_asymptote(plain, n_boot=30).over_n.boot is None


def test_joint_needs_three_sizes_and_names_the_bad_one():
    curves = paper_curves()
    two = dict(list(curves.items())[:2])
    with pytest.raises(FitError, match=">= 3 model sizes, got 2"):
        joint_asymptote(two)
    n0 = next(iter(curves))
    curves[n0] = curves[n0][:2]
    with pytest.raises(FitError, match=f"N = {n0:g}: need at least 3"):
        joint_asymptote(curves)


def test_data_efficiency_inverts_a_known_data_law():
    A, alpha, E = 1.2, 0.23, 2.6
    budgets = np.array([0.2097, 0.4194, 0.8389, 1.678])
    rng = np.random.default_rng(0)
    base = fit_power_law(budgets, law(budgets, A, alpha, E) + rng.normal(0, 1e-4, 4), n_boot=100)
    for loss in (3.6, 3.4, 3.1):
        truth = (A / (loss - E)) ** (1 / alpha)
        assert base.inverse(loss) == pytest.approx(truth, rel=0.05)
        eff = data_efficiency(base, loss, reference=0.2097)
        assert eff.value == pytest.approx(truth / 0.2097, rel=0.05)
        assert eff.ci[0] <= eff.value <= eff.ci[1]
    # the recipe at the baseline's own loss at the reference budget is worth 1x
    assert data_efficiency(base, float(base(0.2097)), 0.2097).value == pytest.approx(1.0, rel=1e-9)
    # a better recipe needs more baseline data; below the asymptote no budget is enough
    assert data_efficiency(base, 3.2, 0.2097).value > data_efficiency(base, 3.3, 0.2097).value
    below = data_efficiency(base, 2.5, 0.2097)
    assert below.value == math.inf
    d = to_jsonable(below)
    assert d["efficiency"] is None and "asymptote" in d["note"]
    json.dumps(d, allow_nan=False)


def test_data_efficiency_interval_pairs_recipe_and_baseline_samples():
    budgets = np.array([0.2, 0.4, 0.8, 1.6])
    rng = np.random.default_rng(1)
    base = fit_power_law(budgets, law(budgets, 1.2, 0.23, 2.6) + rng.normal(0, 0.003, 4), n_boot=80)
    fixed = data_efficiency(base, 3.2, 0.2)
    spread = data_efficiency(base, 3.2, 0.2, recipe_boot=3.2 + rng.normal(0, 0.05, 80))
    assert spread.value == fixed.value
    assert spread.ci[1] - spread.ci[0] > fixed.ci[1] - fixed.ci[0]
    with pytest.raises(FitError, match="reference budget"):
        data_efficiency(base, 3.2, 0.0)


def test_every_report_shows_a_missing_number_the_same_way():
    """One formatter for report.md, REPORT.md and the downstream tables: no number is '-', unbounded is inf."""
    from megarecipe.analysis import downstream, recipe_report

    assert MISSING == "-"
    assert [number(None), number(math.nan), number(math.inf), number(-math.inf)] == ["-", "-", "inf", "-inf"]
    assert number(3.14159) == "3.1416" and number(0.5, ".0%") == "50%" and number(7, "d") == "7"
    assert recipe_report.number is number and downstream.number is number
    assert "| - |" in downstream.results_table({"sciq": {"acc": 0.5, "n": 10}})


def test_fixed_design_bootstrap_refits_every_point_of_each_resample():
    """resample_points=False (the recipe's fits: the x were chosen): each resample is the fit of all the points at
    that resample's losses, so without noise the interval is the point estimate itself."""
    rng = np.random.default_rng(7)
    x = np.array([1.0, 2.0, 4.0, 8.0])
    y = 2.0 + 1.0 / x**0.5
    draws = y + rng.normal(0, 0.01, (6, 4))
    got = fit_power_law(x, y, n_boot=6, y_boot=draws, resample_points=False)
    for row, want in zip(got.boot, draws, strict=True):
        one = fit_power_law(x, want)
        assert np.allclose(row, [one.A, one.alpha, one.E], rtol=1e-4, atol=1e-6)
    still = fit_power_law(x, y, n_boot=5, y_boot=np.tile(y, (5, 1)), resample_points=False)
    assert np.allclose(still.boot[:, 2], still.E, atol=1e-6)
    with pytest.raises(FitError, match="needs each resample's losses"):
        fit_power_law(x, y, n_boot=5, resample_points=False)
