"""The local-optimality certificate of a search: the centre, each neighbour's loss and margin, and the centre
re-run with another seed, so a margin within the seed-to-seed spread is flagged "not distinguishable".

A centre is certified only when every neighbour finished and none beat it: a failed neighbour's loss is unknown,
so it cannot vouch for the centre. A centre at the first or last value of a coordinate's grid has no neighbour on
that side; it is flagged as on the grid's edge (the optimum may lie beyond the grid)."""

from __future__ import annotations

import os

from megarecipe import atomic
from megarecipe.launch import number

CERTIFICATE_JSON, CERTIFICATE_MD = "certificate.json", "certificate.md"
FAILED = "failed"  # a neighbour whose run failed; also the key that lists them
SHORT = {"epochs": "epochs", "lr": "LR", "weight_decay": "WD"}


def edges(values: dict, grid: dict) -> list[str]:
    """`WD high`, `epochs low`, ...: each coordinate whose value is the last (or first) of a grid of >= 2 values."""
    out = []
    for name, vals in grid.items():
        vals = sorted(float(v) for v in vals)
        if len(vals) >= 2 and name in values:
            v = float(values[name])
            if v >= vals[-1]:
                out.append(f"{SHORT.get(name, name)} high")
            elif v <= vals[0]:
                out.append(f"{SHORT.get(name, name)} low")
    return out


def build(result, names: dict, seed_run: dict | None, runs: int) -> dict:
    """result: a SearchResult; names: point -> run name; seed_run: {"seed", "run", "loss"} of the re-run."""
    loss = result.loss
    spread = abs(seed_run["loss"] - loss) if seed_run and seed_run.get("loss") is not None else None
    rows = []
    for point, coord, step, n_loss in result.neighbours:
        margin = None if n_loss is None else n_loss - loss
        if n_loss is None:
            verdict = FAILED
        elif spread is None:
            verdict = "worse (seed spread unknown)" if margin > 0 else "tie"
        else:
            verdict = "worse" if margin > spread else "not distinguishable"
        rows.append(
            {
                "coordinate": coord,
                "step": step,
                "values": result.grid.at(point),
                "run": names[point],
                "loss": n_loss,
                "margin": margin,
                "verdict": verdict,
            }
        )
    grid = {n: list(v) for n, v in zip(result.grid.names, result.grid.values, strict=True)}
    return {
        "centre": result.values,
        "run": names[result.centre],
        "loss": loss,
        "seed_rerun": seed_run,
        "seed_spread": spread,
        "neighbours": rows,
        "certified": all(r["loss"] is not None and r["margin"] >= 0 for r in rows),
        FAILED: [r["run"] for r in rows if r["loss"] is None],
        "edge": edges(result.values, grid),
        "distinguishable": spread is not None and all(r["verdict"] in ("worse", FAILED) for r in rows),
        "rounds": len(result.rounds),
        "points_evaluated": len(result.evaluated),
        "runs": runs,
        "grid_size": result.grid.size(),
        "grid": grid,
        "path": [{"centre": result.grid.at(r.centre), "loss": r.losses[r.centre]} for r in result.rounds],
    }


def _v(name, v) -> str:
    return str(int(v)) if name == "epochs" else number(v)


def _loss(v) -> str:
    return FAILED if v is None else f"{v:.4f}"


def markdown(cert: dict, title: str = "") -> str:
    names = list(cert["centre"])
    head = "| point | " + " | ".join(SHORT.get(n, n) for n in names) + " | val/loss | margin | verdict | run |"
    lines = [
        f"### {title or 'Certificate'}",
        "",
        f"Centre {', '.join(f'{SHORT.get(n, n)} {_v(n, v)}' for n, v in cert['centre'].items())}: val/loss "
        f"{cert['loss']:.4f} after {cert['rounds']} round(s), {cert['points_evaluated']} grid points of "
        f"{cert['grid_size']}.",
        "",
        head,
        "|" + "---|" * (len(names) + 5),
    ]
    lines.append(
        "| centre | "
        + " | ".join(_v(n, cert["centre"][n]) for n in names)
        + f" | {cert['loss']:.4f} | | | {cert['run']} |"
    )
    seed = cert.get("seed_rerun")
    if seed:
        lines.append(
            f"| centre, seed {seed['seed']} | "
            + " | ".join(_v(n, cert["centre"][n]) for n in names)
            + f" | {_loss(seed.get('loss'))} | {_spread(cert)} | seed spread | {seed['run']} |"
        )
    for r in cert["neighbours"]:
        arrow = "+" if r["step"] > 0 else "-"
        margin = "" if r["margin"] is None else f"{r['margin']:+.4f}"
        lines.append(
            f"| {SHORT.get(r['coordinate'], r['coordinate'])} {arrow} | "
            + " | ".join(_v(n, r["values"][n]) for n in names)
            + f" | {_loss(r['loss'])} | {margin} | {r['verdict']} | {r['run']} |"
        )
    verdict = "locally optimal" if cert["certified"] else "NOT certified"
    failed = [r["run"] for r in cert["neighbours"] if r["loss"] is None]
    if failed:  # a failed run may have diverged, or died of something else: its loss is unknown
        verdict += (
            f": {len(failed)} neighbour(s) failed ({', '.join(failed)}), so the centre is not shown to beat "
            f"them; see their train.log, or run again with --retry-failed"
        )
    if cert["certified"] and not cert["distinguishable"]:
        verdict += "; some neighbours are within the seed-to-seed spread (not distinguishable)"
    if cert.get("edge"):
        verdict += (
            f"; on the grid's edge ({', '.join(cert['edge'])}): no neighbour beyond it was tried, so the "
            f"optimum may lie outside the grid"
        )
    lines += ["", f"Verdict: {verdict}.", ""]
    return "\n".join(lines)


def _spread(cert) -> str:
    return "" if cert["seed_spread"] is None else f"±{cert['seed_spread']:.4f}"


def write(out_dir: str, cert: dict, title: str = "") -> None:

    atomic.write_json(os.path.join(out_dir, CERTIFICATE_JSON), cert)
    atomic.write_text(os.path.join(out_dir, CERTIFICATE_MD), markdown(cert, title))
