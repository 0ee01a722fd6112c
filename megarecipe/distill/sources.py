"""What a distill.teacher path holds: a top-k cache (CACHE/cache.json), told apart here without importing torch;
otherwise a finished run or an ensemble dir (megarecipe/distill/teacher.py)."""

from __future__ import annotations

import json
import os

CACHE_JSON = "cache.json"


def is_cache(path: str) -> bool:
    return os.path.isfile(os.path.join(path, CACHE_JSON))


def read_info(path: str) -> dict:
    with open(os.path.join(path, CACHE_JSON)) as f:
        return json.load(f)
