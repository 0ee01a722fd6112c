"""The checks of a run's data settings against the data dirs themselves: what the layout needs to know."""

from __future__ import annotations

import os

from megarecipe.config import ConfigError, DataConfig, DataFacts, mix_sources
from megarecipe.config.sources import mix_counts
from megarecipe.data.errors import DataError
from megarecipe.data.meta import DataMeta, load_meta
from megarecipe.data.tokenizer import find_tokenizer, tokenizer_sha256


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def read_facts(d: DataConfig) -> tuple[DataMeta, DataFacts]:
    """data.dir's meta and the facts the layout checks; data.tokenizer, if set, must be the one it was made with."""
    try:
        meta = load_meta(d.dir)
    except DataError as e:
        raise ConfigError(f"data.dir: {e}") from None
    if d.tokenizer:
        _check(
            os.path.isfile(d.tokenizer) or os.path.isdir(d.tokenizer) and find_tokenizer(d.tokenizer),
            f"data.tokenizer={d.tokenizer!r} not found; give a .model or tokenizer.json file, a tokenizer folder, "
            f"or null",
        )
        _check(
            tokenizer_sha256(d.tokenizer) == meta.tokenizer_sha256,
            f"data.dir={d.dir!r} was made with another tokenizer than data.tokenizer={d.tokenizer!r}; "
            f"re-run tools/prepare_data.py --tokenizer {d.tokenizer} or point data.dir at a matching dir",
        )
    val = min(meta.val_tokens, d.val_tokens or meta.val_tokens)
    return meta, DataFacts(tokenizer_vocab=meta.vocab_size, train_tokens=meta.train_tokens, val_tokens=val)


def mix_epoch(d: DataConfig, meta: DataMeta, seq_len: int, num_sequences: int) -> int:
    """Every mixed dir loads, shares the first one's tokenizer and holds a sequence; returns the epoch's size."""
    sources = mix_sources(d)
    for where, _ in sources[1:]:
        try:
            other = load_meta(where)
        except DataError as e:
            raise ConfigError(f"data.mix: {e}") from None
        _check(
            other.tokenizer_sha256 == meta.tokenizer_sha256,
            f"data.mix: {where!r} was made with another tokenizer than {d.dir!r}; mix only data dirs of one "
            f"tokenizer (tools/prepare_data.py --tokenizer, or sample from a teacher trained on {d.dir!r})",
        )
        _check(
            other.train_tokens > seq_len,
            f"data.mix: {where!r} has {other.train_tokens} training tokens, less than one sequence of "
            f"model.seq_len={seq_len}+1; sample or prepare more",
        )
    counts = mix_counts(num_sequences, [w for _, w in sources])
    _check(min(counts) >= 1, f"data.mix={d.mix}: a ratio gives no sequence per epoch of {num_sequences}; raise it")
    return sum(counts)
