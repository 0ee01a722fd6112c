"""report.md, fits.json and runs.csv for a set of fits."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np

from megarecipe.analysis.runs import COLUMNS, table_rows, write_csv

LOSS_TEXT = {"lsq": "least squares on the raw loss", "huber": "Huber loss on the raw loss"}


MISSING = "-"  # how every report of the analysis shows a number it does not have


def number(v, fmt: str = ".4f") -> str:
    """A number of a report, formatted: MISSING where there is none (None or NaN), inf or -inf where unbounded."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return MISSING
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return format(v, fmt)


def _ci(fit, name, fmt=".4f") -> str:
    lo_hi = fit.ci.get(name)
    return f"[{number(lo_hi[0], fmt)}, {number(lo_hi[1], fmt)}]" if lo_hi else MISSING


def fit_markdown(title: str, fit, x_text: str) -> str:
    boot = 0 if fit.boot is None else len(fit.boot)
    lines = [
        f"## {title}",
        "",
        f"`L(x) = A / x^alpha + E`, x = {x_text}; {LOSS_TEXT[fit.loss]}"
        + (f"; {boot} bootstrap resamples of the points, {fit.level:.0%} percentile intervals." if boot else "."),
        "",
        f"| parameter | value | {fit.level:.0%} interval |",
        "|---|---|---|",
        f"| A | {fit.A:.4g} | {_ci(fit, 'A', '.4g')} |",
        f"| alpha | {fit.alpha:.4f} | {_ci(fit, 'alpha')} |",
        f"| **E** | **{fit.E:.4f}** | {_ci(fit, 'E')} |",
        "",
        f"Residual RMSE {fit.rmse:.2g} over {len(fit.x)} points.",
        "",
        "| x | loss | fitted | residual | from |",
        "|---|---|---|---|---|",
    ]
    for row in fit.to_dict()["points"]:
        lines.append(
            f"| {row['x']:.4g} | {row['loss']:.4f} | {row['fitted']:.4f} | {row['residual']:+.4f} | {row['source']} |"
        )
    if fit.dropped:
        lines += [
            "",
            "Best run per x used; left out (a better run shares its x): "
            + ", ".join(f"{p.source} ({p.x:.4g}: {p.loss:.4f})" for p in fit.dropped)
            + ".",
        ]
    for note in fit.notes:
        lines += ["", f"Note: {note}."]
    return "\n".join(lines) + "\n"


def joint_markdown(joint, n_text="N (billions)") -> str:
    lines = [
        "## Stage 1: K-limit per model size",
        "",
        "Each model size's ensemble loss fitted over K members; its asymptote E_N is the K-limit.",
        "",
        f"| {n_text} | E_N | interval | A | alpha | RMSE | K used |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, fit in joint.per_n.items():
        lines.append(
            f"| {n:.4g} | {fit.E:.4f} | {_ci(fit, 'E')} | {fit.A:.4g} | {fit.alpha:.3f} | {fit.rmse:.2g} | "
            f"{', '.join(f'{k:g}' for k in fit.x)} |"
        )
    notes = [f"N = {n:.4g}: {note}" for n, fit in joint.per_n.items() for note in fit.notes]
    lines += [""] + [f"Note: {n}." for n in notes] + ([""] if notes else [])
    lines.append(fit_markdown("Stage 2: N-limit of the K-limits (joint asymptote)", joint.over_n, n_text))
    return "\n".join(lines)


def efficiency_markdown(eff, recipe_text: str) -> str:
    val = f"{eff.value:.2f}x" if math.isfinite(eff.value) else "unbounded"
    ci = (
        ""
        if eff.ci is None
        else f" ({eff.level:.0%} interval [{number(eff.ci[0], '.2f')}, {number(eff.ci[1], '.2f')}])"
    )
    need = eff.tokens_needed
    lines = [
        "## Data efficiency",
        "",
        f"Recipe loss L = {eff.recipe_loss:.4f} ({recipe_text}). Reference budget "
        f"{eff.reference:.4g}B tokens, where the baseline's law gives {float(eff.baseline(eff.reference)):.4f}.",
        "",
        f"The baseline would need D_base(L) = {number(need, '.4g')}B tokens to reach L: **data efficiency {val}**{ci}.",
        "",
    ]
    if not math.isfinite(eff.value):
        lines += [
            "The recipe's loss is at or below the baseline's asymptote, so no budget gets the baseline there.",
            "",
        ]
    return "\n".join(lines)


def runs_markdown(records, problems) -> str:
    cols = [c for c in COLUMNS if c != "path"]
    lines = ["## Runs read", ""]
    if records:
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(row[:-1]) + " |" for row in table_rows(records)]
    else:
        lines.append("(none: points came from a table)")
    if problems:
        lines += ["", "Left out:", ""] + [f"- `{path}`: {why}" for path, why in problems]
    return "\n".join(lines) + "\n"


def to_jsonable(obj):
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = obj.to_dict() if hasattr(obj, "to_dict") else dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


REPORT_FILES = ("report.md", "fits.json", "runs.csv")


def check_out(out: str) -> None:
    """--out is new, empty, or an earlier fit report (it holds fits.json): a user's folder is never written over."""
    if not os.path.exists(out):
        return
    if not os.path.isdir(out):
        raise OSError(20, "exists and is not a folder; give a new --out folder", out)
    if os.listdir(out) and not os.path.isfile(os.path.join(out, REPORT_FILES[1])):
        raise OSError(
            17,
            f"is not empty and holds no earlier fit report ({REPORT_FILES[1]}); its files would be "
            f"overwritten, so give a new --out folder",
            out,
        )


def write(
    out: str, title: str, command: str, records, problems, sections: list[str], figures: list[str], data: dict
) -> list[str]:
    """Writes report.md, fits.json and runs.csv into out; returns the paths written."""
    os.makedirs(out, exist_ok=True)
    md = [f"# {title}", "", f"Command: `{command}`", ""] + sections
    md += [f"![{os.path.splitext(f)[0]}]({f})\n" for f in figures]
    md.append(runs_markdown(records, problems))
    paths = [os.path.join(out, n) for n in REPORT_FILES]
    with open(paths[0], "w") as f:
        f.write("\n".join(md))
    with open(paths[1], "w") as f:
        json.dump(
            to_jsonable(
                {
                    "title": title,
                    "command": command,
                    **data,
                    "runs": [dataclasses.asdict(r) for r in records],
                    "left_out": [{"path": p, "why": w} for p, w in problems],
                }
            ),
            f,
            indent=1,
        )
    write_csv(records, paths[2])
    return paths
