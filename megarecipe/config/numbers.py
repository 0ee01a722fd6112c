"""Counts written the way people write them: 200M, 1.5B, 1e9, 65536."""

from __future__ import annotations

import dataclasses
import re
import typing
from decimal import Decimal, DecimalException, localcontext

from megarecipe.errors import ConfigError

SUFFIXES = {"k": 10**3, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}
LARGEST = 10**18


def parse_count(text, name: str) -> int:
    """A whole number in 1..1e18 from "200M", "1.5B", "1e9", "65_536" (exact: decimal, never a float).
    `name` is the field or flag the message names."""
    fix = "write a whole number such as 200M, 1.5B, 1e9 or 65536"
    if isinstance(text, bool):
        raise ConfigError(f"{name}={text} is not a count; {fix}")
    s = str(text).strip().replace("_", "")
    scale = SUFFIXES.get(s[-1:], 1)
    digits = s[:-1] if scale > 1 else s
    if len(digits) > 64:
        raise ConfigError(f"{name}={s[:20]}... is too long to be a count; {fix}")
    try:
        value = Decimal(digits)
    except DecimalException:
        raise ConfigError(f"{name}={s!r} is not a count; {fix}") from None
    if not value.is_finite():
        raise ConfigError(f"{name}={s} is not finite; {fix}")
    if value > LARGEST:  # before scaling: the product of a huge exponent need not be representable
        raise ConfigError(f"{name}={s} is larger than {LARGEST:.0e}; {fix}")
    with localcontext() as ctx:
        ctx.prec = 100  # exact for every value the length check lets through
        value *= scale
    if value != value.to_integral_value():
        raise ConfigError(f"{name}={s} is not a whole number; {fix}")
    if not 1 <= value <= LARGEST:
        raise ConfigError(f"{name}={s} is outside 1..{LARGEST:.0e}; {fix}")
    return int(value)


def counts_to_ints(tree: dict, schema: type, prefix: str = "") -> dict:
    """A config layer (plain dicts) with each integer field written as a count (a string or a float) made an
    int; the rest as it was. Interpolations (${...}) are left to the loader."""
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        if f.name not in tree:
            continue
        hint, value, key = hints[f.name], tree[f.name], prefix + f.name
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            counts_to_ints(value, hint, key + ".")
        elif hint in (int, typing.Optional[int]) and written_count(value):
            tree[f.name] = parse_count(value, key)
    return tree


def is_int_field(schema: type, key: str) -> bool:
    """Whether the dotted `key` (data.train_tokens) names an integer field of `schema`."""
    for part in key.split("."):
        if not dataclasses.is_dataclass(schema):
            return False
        hint = typing.get_type_hints(schema).get(part)
        if hint is None:
            return False
        schema = hint
    return schema in (int, typing.Optional[int])


def written_count(value) -> bool:
    """A value of an integer field that is written as a count rather than an int: "200M", 1e9, "65536"."""
    if isinstance(value, float):
        return True
    if not isinstance(value, str) or "${" in value:
        return False
    # a plain integer (0 and negatives too: the field's own check judges them) is the loader's to read
    return value.strip() not in ("", "null", "None", "~") and not re.fullmatch(r"\s*[+-]?\d+\s*", value)
