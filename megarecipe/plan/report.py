"""The ranked table the tool prints."""

from __future__ import annotations

from collections import Counter

from megarecipe.plan.candidates import Candidate


def table(ranked: list[Candidate], top: int) -> str:
    """Memory in GiB, or MiB when every layout shown needs less than 1 GiB."""
    unit, scale = ("GiB", 1 << 30) if any(c.memory.total >= 1 << 30 for c in ranked[:top]) else ("MiB", 1 << 20)

    def _gib(n) -> str:
        return "-" if n is None else f"{n / scale:.2f}"

    head = (
        "#",
        "zero",
        "tp",
        "pp",
        "dp",
        "mbs",
        "recompute",
        "params",
        "grads",
        "optim",
        "activ",
        "buffers",
        f"total {unit}",
        "DS est",
        "fits",
        "comm GB",
        "est step s",
        "meas tok/s",
        "meas step s",
        f"meas peak {unit}",
    )
    rows = [head]
    for c in ranked[:top]:
        mem, meas = c.memory, c.measured or {}
        rows.append(
            (
                str(c.rank),
                c.zero,
                str(c.tp),
                str(c.pp),
                str(c.dp),
                str(c.micro_batch),
                c.recompute,
                _gib(mem.params),
                _gib(mem.grads),
                _gib(mem.optimizer),
                _gib(mem.activations),
                _gib(mem.buffers),
                _gib(mem.total),
                _gib(mem.deepspeed_model_states),
                "yes" if c.fits else "NO",
                f"{c.comm.total / 1e9:.2f}",
                f"{c.step_seconds:.3f}",
                f"{meas['tokens_per_s']:.0f}" if meas.get("tokens_per_s") else meas.get("error", "-")[:40],
                f"{meas['step_seconds']:.3f}" if meas.get("step_seconds") else "-",
                _gib(meas.get("peak_bytes")),
            )
        )
    if not any(c.measured for c in ranked[:top]):
        rows = [r[:-3] for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def refused_summary(candidates: list[Candidate]) -> str:
    reasons = Counter(c.refused for c in candidates if c.refused)
    if not reasons:
        return ""
    lines = [f"refused by the trainer ({sum(reasons.values())} candidates, never proposed):"]
    for reason, n in reasons.most_common():
        example = next(c for c in candidates if c.refused == reason)
        where = f"{example.zero} tp{example.tp} pp{example.pp} mbs{example.micro_batch}"
        lines.append(f"  {n:4d} x  e.g. {where}: {reason}")
    return "\n".join(lines)
