"""`tune --status SWEEP`: what ran, what is running, what is left - from the directories alone."""

from __future__ import annotations

import json
import os
import time

from megarecipe import atomic, rundir
from megarecipe.errors import UserError
from megarecipe.launch.spec import LOG
from megarecipe.rundir import RunDir, RunDirError

LADDER_JSON = "ladder.json"


class StatusError(UserError):
    """No sweep to report on, or its sweep.json damaged; the message names the path."""


def sweeps(out: str) -> list[str]:
    """The sweep directories under `out`: itself, or a ladder's, in the ladder's order."""
    if os.path.isfile(os.path.join(out, "sweep.json")):
        return [out]
    order = atomic.read_json(os.path.join(out, LADDER_JSON)).get("planned", [])
    found = (
        sorted(d for d in os.listdir(out) if os.path.isfile(os.path.join(out, d, "sweep.json")))
        if os.path.isdir(out)
        else []
    )
    return [os.path.join(out, d) for d in [d for d in order if d in found] + [d for d in found if d not in order]]


def run_rows(sweep: str) -> list[list[str]]:
    rows = []
    for name in sorted(os.listdir(sweep)):
        path = os.path.join(sweep, name)
        if not os.path.isdir(path) or not (
            os.path.exists(os.path.join(path, rundir.RUN_JSON)) or os.path.exists(os.path.join(path, LOG))
        ):
            continue
        run = RunDir(path)
        try:
            info, st = run.info() or {}, run.state()
        except RunDirError as e:
            rows.append([name, "unreadable", "", "", str(e)[:60]])
            continue
        loss = (info.get("final") or {}).get("val_loss")
        started, ended = info.get("started"), info.get("ended")
        secs = None
        if started and st == rundir.FINISHED and ended:
            secs = ended - started
        elif started and st == rundir.RUNNING:
            secs = time.time() - started
        total = (info.get("facts") or {}).get("total_steps")
        step = f"{info.get('step', 0)}/{total}" if total else str(info.get("step", ""))
        rows.append(
            [
                name,
                st,
                step,
                "" if loss is None else f"{loss:.4f}",
                "" if secs is None else f"{secs:.1f} s" if secs < 10 else f"{secs:.0f} s",
            ]
        )
    return rows


def _sweep_json(sweep: str) -> dict:
    """sweep.json, with fields of the wrong type dropped (the runs themselves are read from their directories)."""
    path = os.path.join(sweep, "sweep.json")
    try:
        with open(path) as f:
            s = json.load(f)
    except (OSError, ValueError) as e:
        raise StatusError(
            f"{path} is unreadable ({type(e).__name__}: {str(e)[:80]}); the runs beside it are "
            f"intact, and the same tune command replays them and writes it again"
        ) from None
    if not isinstance(s, dict):
        raise StatusError(f"{path} holds no JSON object; the same tune command replays the runs and writes it again")
    kinds = {"state": str, "rounds": list, "pending": list, "optimum": dict}
    s = {k: v for k, v in s.items() if isinstance(v, kinds.get(k, object))}
    s["pending"] = [p for p in s.get("pending", []) if isinstance(p, str)]
    return s


def table(rows: list[list[str]], head: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [head, *rows])


def report(out: str) -> str:
    if os.path.isfile(out):
        raise StatusError(f"{out} is a file; give the sweep directory (the --out of tune.py)")
    if not os.path.isdir(out):
        raise StatusError(f"{out} does not exist; give the sweep directory (the --out of tune.py)")
    found = sweeps(out)
    if not found:
        return f"{out}: no sweep here (no sweep.json)"
    lines = []
    for sweep in found:
        s = _sweep_json(sweep)
        rows = run_rows(sweep)
        head = f"== {sweep}: {s.get('state', '?')}, {len(s.get('rounds', []))} round(s)"
        if s.get("optimum") and isinstance(s.get("loss"), (int, float)):
            head += f"; optimum {s['optimum']} val/loss {s['loss']:.4f}"
        lines += [head, table(rows, ["run", "state", "step", "val/loss", "time"])]
        done = {r[0] for r in rows if r[1] == rundir.FINISHED}
        left = [p for p in s.get("pending", []) if p not in done]
        if s.get("state") in ("searching", "certifying"):
            lines.append(
                f"left in this round: {', '.join(left) or 'none'}"
                + (
                    "; later rounds follow until the centre beats its neighbours"
                    if s.get("state") == "searching"
                    else "; then the certificate"
                )
            )
        lines.append("")
    ladder = atomic.read_json(os.path.join(out, LADDER_JSON))
    todo = [d for d in ladder.get("planned", []) if not os.path.isfile(os.path.join(out, d, "sweep.json"))]
    if todo:
        lines.append(f"not started: {', '.join(todo)}")
    return "\n".join(lines).rstrip() + "\n"
