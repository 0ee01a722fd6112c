"""data.mix parsed: the data dirs a run trains on and their ratios."""

from __future__ import annotations

from fractions import Fraction

from megarecipe.config.schema import ConfigError, DataConfig


def mix_sources(d: DataConfig) -> list[tuple[str, Fraction]]:
    """data.mix as (dir, ratio) pairs; [(data.dir, 1)] without a mix."""
    if not d.mix:
        return [(d.dir, Fraction(1))]
    out = []
    for item in d.mix:
        where, _, ratio = str(item).rpartition(":")
        try:
            weight = Fraction(ratio.strip())
        except (ValueError, ZeroDivisionError):
            weight = None
        if not where or weight is None or weight <= 0:
            raise ConfigError(
                f"data.mix entry {item!r} is not DIR:RATIO with a ratio > 0; write e.g. "
                f"data.mix=[data/real:0.1,data/synth:0.9]"
            )
        out.append((where, weight))
    if len({w for w, _ in out}) != len(out):
        raise ConfigError(f"data.mix names a data dir twice ({d.mix}); give each dir once")
    return out


def mix_counts(num_sequences: int, weights: list) -> list[int]:
    """Sequences per epoch of each source of data.mix, the first being num_sequences."""
    first = Fraction(weights[0])
    return [num_sequences] + [round(num_sequences * Fraction(w) / first) for w in weights[1:]]
