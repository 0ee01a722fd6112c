"""Writes that a crash never leaves half done: a temporary name in the same directory, then a rename."""
from __future__ import annotations

import json
import os
import shutil


def write_bytes(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str, obj) -> None:
    write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def read_json(path: str) -> dict:
    """A JSON object written by write_json; {} when it is not there (yet) or not an object."""
    try:
        with open(path) as f:
            obj = json.load(f)
    except (OSError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}


def replace_dir(tmp: str, final: str) -> None:
    """Move a finished directory `tmp` to `final`, replacing an older one; the old one goes only after. Its
    interim name is this process's own, never a `final.old` that may be someone's backup."""
    old = f"{final}.old{os.getpid()}"
    shutil.rmtree(old, ignore_errors=True)
    if os.path.isdir(final):
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
