"""Figures like the paper's: loss against x on a log axis, the points, the fitted curve and its dashed
asymptote, one colour per recipe, `E = ...` in the legend."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

COLORS = plt.get_cmap("tab10").colors


def _grid(x, pad=1.4, n=200):
    lo, hi = float(np.min(x)), float(np.max(x))
    return np.geomspace(lo / pad, hi * pad, n)


def _label(v: float) -> str:
    return f"{v:.3g}"


def size_label(n: float) -> str:
    """A parameter count in billions as the paper names models: 154M, 1.43B."""
    return f"{n * 1000:.0f}M" if n < 1 else f"{n:.3g}B"


def _log_x(ax, xs=None):
    ax.set_xscale("log")
    ticks = sorted(set(float(v) for v in xs)) if xs is not None else []
    if 0 < len(ticks) <= 12:  # label the points' own x (model sizes, K) rather than decades
        ax.set_xticks(ticks)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _label(v)))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(True, which="major", alpha=0.3)


def draw(ax, fit, color, label, marker="o"):
    xs = _grid(fit.x)
    ax.plot(xs, fit(xs), "-", color=color, lw=1.6)
    ax.axhline(fit.E, color=color, ls="--", lw=1.0, alpha=0.8)
    ci = fit.ci.get("E")
    text = f"{label}: E = {fit.E:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
    ax.plot(fit.x, fit.y, marker, color=color, ms=6, ls="none", label=text)
    for p in fit.dropped:  # other runs of a sweep, faint
        ax.plot(p.x, p.loss, marker, color=color, ms=4, alpha=0.25, ls="none")


def plot_curves(fits: dict, path: str, xlabel: str, title: str = "", ylabel: str = "validation loss") -> str:
    """fits: label -> PowerLaw. One PNG."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    xs = np.concatenate([f.x for f in fits.values()])
    for i, (label, fit) in enumerate(fits.items()):
        draw(ax, fit, COLORS[i % len(COLORS)], label)
    _log_x(ax, xs)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_joint(joint, path: str, n_label=size_label) -> str:
    """Left: L(K) per model size with its asymptote E_N. Right: E_N over N with the joint asymptote."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4))
    ks = []
    for i, (n, fit) in enumerate(joint.per_n.items()):
        draw(left, fit, COLORS[i % len(COLORS)], n_label(n))
        ks.extend(fit.x)
    _log_x(left, ks)
    left.set_xlabel("ensemble members K")
    left.set_ylabel("validation loss")
    left.set_title("stage 1: K-limit per model size")
    left.legend(fontsize=8)
    over = joint.over_n
    draw(right, over, "black", "joint")
    _log_x(right, over.x)
    right.set_xlabel("parameters N (billions)")
    right.set_ylabel("asymptote E_N of L(K)")
    right.set_title("stage 2: N-limit of the K-limits")
    right.legend(fontsize=8)
    return _save(fig, path)


def plot_efficiency(eff, path: str, recipe_label: str = "recipe") -> str:
    """The baseline's data law, the recipe's loss as a level line, and where the law reaches it."""
    base = eff.baseline
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    need = eff.tokens_needed
    xs = _grid(np.append(base.x, need if np.isfinite(need) else base.x.max()))
    ax.plot(xs, base(xs), "-", color=COLORS[0], lw=1.6)
    ax.axhline(base.E, color=COLORS[0], ls="--", lw=1.0)
    ax.plot(base.x, base.y, "o", color=COLORS[0], ls="none", label=f"baseline: E = {base.E:.2f}")
    eff_text = f"{eff.value:.2f}x" if np.isfinite(eff.value) else "unbounded"
    if eff.ci:
        eff_text += f" [{eff.ci[0]:.2f}, {eff.ci[1]:.2f}]"
    ax.axhline(eff.recipe_loss, color=COLORS[1], ls=":", lw=1.4,
               label=f"{recipe_label}: L = {eff.recipe_loss:.2f} ({eff_text} data)")
    ax.axvline(eff.reference, color="gray", ls=":", lw=1.0, label=f"reference budget {eff.reference:.3g}B")
    if np.isfinite(need):
        ax.plot([need], [eff.recipe_loss], "D", color=COLORS[1], ms=6)
    _log_x(ax)
    ax.set_xlabel("unique training tokens D (billions)")
    ax.set_ylabel("validation loss")
    ax.set_title("data efficiency")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_members(losses: list[float], member_losses: list, path: str) -> str:
    """The ensemble's held-out loss against K members, with each member's own loss for comparison."""
    ks = np.arange(1, len(losses) + 1)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot(ks, losses, "o-", color=COLORS[0], label="ensemble of the first K")
    own = [(k, v) for k, v in zip(ks, member_losses, strict=True) if v is not None]
    if own:
        ax.plot(*zip(*own, strict=True), "x", color=COLORS[1], label="member K alone")
    _log_x(ax, ks)
    ax.set_xlabel("members K")
    ax.set_ylabel("validation loss")
    ax.legend()
    return _save(fig, path)


def _save(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
