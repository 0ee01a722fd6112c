"""Figures like the paper's: loss against x on a log axis, the points, the fitted curve and its dashed
asymptote, one colour per recipe, `E = ...` in the legend; the reducible loss L - E on log-log axes.

Parameters and tokens are in billions in the fits; their axes are labelled in the unit that fits the values
(K, M or B), with ticks at the points and one step beyond them either way, where the curve is extrapolated.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

COLORS = plt.get_cmap("tab10").colors
PAD = 2.0  # the curves run this factor beyond the points either way


def _grid(x, pad=PAD, n=200):
    lo, hi = float(np.min(x)), float(np.max(x))
    return np.geomspace(lo / pad, hi * pad, n)


def count_text(n: float) -> str:
    """A count in its unit: 90.1K, 1.43M, 1.4B."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.3g}"


def params_text(n: float) -> str:
    return count_text(float(n))


def size_label(n: float) -> str:
    """A parameter count in billions as the paper names models: 154M, 1.43B, 90.1K."""
    return count_text(n * 1e9)


def _unit_of(xlabel: str) -> str | None:
    return "billions" if "billions" in xlabel else None


def _log_x(ax, xs=None, billions: bool = False):
    """Log x with ticks at the points' own x and one more either way beyond them (the extrapolation)."""
    ax.set_xscale("log")
    ticks = sorted(set(float(v) for v in xs)) if xs is not None else []
    if 0 < len(ticks) <= 12:
        ratio = (ticks[-1] / ticks[0]) ** (1 / max(len(ticks) - 1, 1)) if len(ticks) > 1 else 2.0
        step = min(max(ratio, 1.5), PAD)
        ticks = [ticks[0] / step, *ticks, ticks[-1] * step]
        ax.set_xticks(ticks)
        fmt = (lambda v, _: count_text(v * 1e9)) if billions else (lambda v, _: f"{v:.3g}")
        ax.xaxis.set_major_formatter(FuncFormatter(fmt))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlim(ticks[0] / 1.15, ticks[-1] * 1.15)
    ax.grid(True, which="major", alpha=0.3)


def draw(ax, fit, color, label, marker="o"):
    xs = _grid(fit.x)
    ax.plot(xs, fit(xs), "-", color=color, lw=1.6)
    ax.axhline(fit.E, color=color, ls="--", lw=1.0, alpha=0.8)
    ci = fit.ci.get("E")
    text = f"{label}: E = {fit.E:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
    ax.plot(fit.x, fit.y, marker, color=color, ms=6, ls="none", label=text)
    for p in fit.dropped:  # other runs of a sweep, faint
        ax.plot(p.x, p.loss, marker, color=color, ms=4, alpha=0.25, ls="none")


def plot_curves(
    fits: dict, path: str, xlabel: str, title: str = "", ylabel: str = "validation loss", unit: str | None = None
) -> str:
    """fits: label -> PowerLaw. unit: "params" or "tokens" for x in billions of them (ticks in K/M/B). One PNG."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    xs = np.concatenate([f.x for f in fits.values()])
    for i, (label, fit) in enumerate(fits.items()):
        draw(ax, fit, COLORS[i % len(COLORS)], label)
    billions = unit is not None or _unit_of(xlabel) is not None
    _log_x(ax, xs, billions=billions)
    ax.set_xlabel(xlabel.replace(" (billions)", "") if billions else xlabel)  # the ticks carry the unit
    ax.set_ylabel(ylabel)
    ax.set_title(title or f"{ylabel} vs {xlabel}")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_params(fits: dict, standard: list, best_standard, path: str, title: str) -> str:
    """Loss over parameters: each fitted recipe, the standard recipe's runs (no fit: it overfits) and its best."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    xs = [p[0] for p in standard]
    for i, (label, fit) in enumerate(fits.items()):
        draw(ax, fit, COLORS[(i + 1) % len(COLORS)], label)
        xs += list(fit.x)
    if standard:
        ax.plot(*zip(*sorted(standard), strict=True), "s:", color=COLORS[0], ms=6, label="standard runs (no fit)")
    if best_standard is not None:
        ax.axhline(best_standard, color=COLORS[0], ls="-.", lw=1.0, label=f"best standard run: {best_standard:.3f}")
    _log_x(ax, xs, billions=True)
    ax.set_xlabel("parameters N")
    ax.set_ylabel("validation loss")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_reducible(fits: dict, path: str) -> str:
    """log(L - E) against log x per fit: a power law is a straight line of slope -alpha."""
    fig, axes = plt.subplots(1, len(fits), figsize=(5.2 * len(fits), 4.2), squeeze=False)
    for ax, (i, (label, fit)) in zip(axes[0], enumerate(fits.items()), strict=True):
        color = COLORS[i % len(COLORS)]
        xs = _grid(fit.x)
        ax.plot(xs, fit.A / xs**fit.alpha, "-", color=color, lw=1.6, label=f"A / x^{fit.alpha:.3g}")
        gap = fit.y - fit.E
        keep = gap > 0
        ax.plot(fit.x[keep], gap[keep], "o", color=color, ls="none", label="points, L - E")
        ax.set_yscale("log")
        _log_x(ax, fit.x, billions=True)
        ax.set_xlabel("parameters N" if "N" in label else "unique training tokens D")
        ax.set_ylabel(f"reducible loss L - E (E = {fit.E:.3f})")
        ax.set_title(f"{label}: reducible loss")
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
    _log_x(right, over.x, billions=True)
    right.set_xlabel("parameters N")
    right.set_ylabel("asymptote E_N of L(K)")
    right.set_title("stage 2: N-limit of the K-limits")
    right.legend(fontsize=8)
    return _save(fig, path)


def plot_efficiency(eff, path: str, recipe_label: str = "recipe") -> str:
    """The baseline's data law, the recipe's loss as a level line, and where the law reaches it."""
    base = eff.baseline
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    need = eff.tokens_needed
    pts = np.append(base.x, need if np.isfinite(need) else base.x.max())
    xs = _grid(pts)
    ax.plot(xs, base(xs), "-", color=COLORS[0], lw=1.6)
    ax.axhline(base.E, color=COLORS[0], ls="--", lw=1.0)
    ax.plot(base.x, base.y, "o", color=COLORS[0], ls="none", label=f"standard, best size per D: E = {base.E:.3f}")
    eff_text = f"{eff.value:.2f}x" if np.isfinite(eff.value) else "unbounded"
    if eff.ci:
        eff_text += f" [{eff.ci[0]:.2f}, {eff.ci[1]:.2f}]"
    ax.axhline(
        eff.recipe_loss,
        color=COLORS[1],
        ls=":",
        lw=1.4,
        label=f"{recipe_label}: L = {eff.recipe_loss:.3f} ({eff_text} data)",
    )
    ax.axvline(eff.reference, color="gray", ls=":", lw=1.0, label=f"reference budget {count_text(eff.reference * 1e9)}")
    if np.isfinite(need):
        ax.plot([need], [eff.recipe_loss], "D", color=COLORS[1], ms=6)
    _log_x(ax, pts, billions=True)
    ax.set_xlabel("unique training tokens D")
    ax.set_ylabel("validation loss")
    ax.set_title(f"data efficiency of {recipe_label}")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_members(losses: list[float], member_losses: list, path: str, title: str = "ensemble loss vs members") -> str:
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
    ax.set_title(title)
    ax.legend()
    return _save(fig, path)


def plot_distill(d: dict, path: str) -> str:
    """Each student beside the same size alone and its teacher, on an axis from 0 (no truncated bars)."""
    labels, values, colors = ["alone"], [d["single_loss"]], ["#999999"]
    for r in d.get("sequence", []):
        labels.append(f"{r['teacher']}\nw {r['weight']:g}")
        values.append(r["student_loss"])
        colors.append("#1f77b4")
    if d.get("logit_kd"):
        labels.append("logit KD\n(extension)")
        values.append(d["logit_kd"]["student_loss"])
        colors.append("#9467bd")
    teachers = {r["teacher"]: r["teacher_loss"] for r in d.get("sequence", []) if not r["self"]}
    fig, ax = plt.subplots(figsize=(1.3 * len(labels) + 2.5, 4.2))
    ax.bar(labels, values, color=colors)
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.3f}", ha="center", va="bottom", fontsize=8)
    for j, (name, v) in enumerate(teachers.items()):
        ax.axhline(v, color=COLORS[3 + j], ls="--", lw=1.0, label=f"teacher {name}: {v:.3f}")
    ax.set_ylim(0, max(values + list(teachers.values())) * 1.12)
    ax.set_ylabel("validation loss")
    pe = d.get("paper_experiment") or {}
    kept = f"; retained {pe['retained']:.0%} on the paper's experiment" if pe.get("retained") is not None else ""
    ax.set_title(f"distillation into {d['size']}{kept}")
    if teachers:
        ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def _save(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
