"""The local-optimality certificate of a search: the centre, each neighbour's loss and margin, and the centre
re-run with another seed, so a margin within the seed-to-seed spread is flagged "not distinguishable"."""
from __future__ import annotations

from megarecipe import atomic
from megarecipe.launch import number

CERTIFICATE_JSON, CERTIFICATE_MD = "certificate.json", "certificate.md"
SHORT = {"epochs": "epochs", "lr": "LR", "weight_decay": "WD"}


def build(result, names: dict, seed_run: dict | None, runs: int) -> dict:
    """result: a SearchResult; names: point -> run name; seed_run: {"seed", "run", "loss"} of the re-run."""
    loss = result.loss
    spread = abs(seed_run["loss"] - loss) if seed_run and seed_run.get("loss") is not None else None
    rows = []
    for point, coord, step, n_loss in result.neighbours:
        margin = None if n_loss is None else n_loss - loss
        if n_loss is None:
            verdict = "failed"
        elif spread is None:
            verdict = "worse (seed spread unknown)" if margin > 0 else "tie"
        else:
            verdict = "worse" if margin > spread else "not distinguishable"
        rows.append({"coordinate": coord, "step": step, "values": result.grid.at(point), "run": names[point],
                     "loss": n_loss, "margin": margin, "verdict": verdict})
    return {"centre": result.values, "run": names[result.centre], "loss": loss, "seed_rerun": seed_run,
            "seed_spread": spread, "neighbours": rows,
            "certified": all(r["loss"] is None or r["margin"] >= 0 for r in rows),
            "distinguishable": spread is not None and all(r["verdict"] in ("worse", "failed") for r in rows),
            "rounds": len(result.rounds), "points_evaluated": len(result.evaluated),
            "runs": runs, "grid_size": result.grid.size(),
            "grid": {n: list(v) for n, v in zip(result.grid.names, result.grid.values, strict=True)},
            "path": [{"centre": result.grid.at(r.centre), "loss": r.losses[r.centre]} for r in result.rounds]}


def _v(name, v) -> str:
    return str(int(v)) if name == "epochs" else number(v)


def _loss(v) -> str:
    return "failed" if v is None else f"{v:.4f}"


def markdown(cert: dict, title: str = "") -> str:
    names = list(cert["centre"])
    head = "| point | " + " | ".join(SHORT.get(n, n) for n in names) + " | val/loss | margin | verdict | run |"
    lines = [f"### {title or 'Certificate'}", "",
             f"Centre {', '.join(f'{SHORT.get(n, n)} {_v(n, v)}' for n, v in cert['centre'].items())}: val/loss "
             f"{cert['loss']:.4f} after {cert['rounds']} round(s), {cert['points_evaluated']} grid points of "
             f"{cert['grid_size']}.", "", head, "|" + "---|" * (len(names) + 5)]
    lines.append("| centre | " + " | ".join(_v(n, cert["centre"][n]) for n in names)
                 + f" | {cert['loss']:.4f} | | | {cert['run']} |")
    seed = cert.get("seed_rerun")
    if seed:
        lines.append(f"| centre, seed {seed['seed']} | " + " | ".join(_v(n, cert["centre"][n]) for n in names)
                     + f" | {_loss(seed.get('loss'))} | {_spread(cert)} | seed spread | {seed['run']} |")
    for r in cert["neighbours"]:
        arrow = "+" if r["step"] > 0 else "-"
        margin = "" if r["margin"] is None else f"{r['margin']:+.4f}"
        lines.append(f"| {SHORT.get(r['coordinate'], r['coordinate'])} {arrow} | "
                     + " | ".join(_v(n, r["values"][n]) for n in names)
                     + f" | {_loss(r['loss'])} | {margin} | {r['verdict']} | {r['run']} |")
    verdict = "locally optimal" if cert["certified"] else "NOT certified"
    failed = [r["run"] for r in cert["neighbours"] if r["loss"] is None]
    if cert["certified"] and failed:   # a failed run may have diverged, or died of something else
        verdict += (f" among the neighbours that finished; {len(failed)} failed ({', '.join(failed)}), so their loss "
                    f"is unknown: see their train.log, or run again with --retry-failed")
    if cert["certified"] and not cert["distinguishable"]:
        verdict += "; some neighbours are within the seed-to-seed spread (not distinguishable)"
    lines += ["", f"Verdict: {verdict}.", ""]
    return "\n".join(lines)


def _spread(cert) -> str:
    return "" if cert["seed_spread"] is None else f"±{cert['seed_spread']:.4f}"


def write(out_dir: str, cert: dict, title: str = "") -> None:
    import os

    atomic.write_json(os.path.join(out_dir, CERTIFICATE_JSON), cert)
    atomic.write_text(os.path.join(out_dir, CERTIFICATE_MD), markdown(cert, title))
