"""Writes that a crash never leaves half done: a temporary name in the same directory, then a rename.

A directory is named by its real path (os.path.realpath), resolved once: `link/../x` is where the OS puts it (x
beside the link's target), so the checks made on a path and the writes made to it reach the same directory."""

from __future__ import annotations

import json
import os
import shutil
import tempfile


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


def file_mode() -> int:
    """The mode open() gives a new file: 0666 less the umask (which can only be read by setting it)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def build_dir(final: str) -> str:
    """A new, empty directory beside `final` to build it in, then replace_dir(tmp, final): named after this
    process, so two builders never share one and a user's `final.tmp` is not touched. Build dirs left by
    processes that no longer run (killed mid-build) are removed."""
    final = os.path.realpath(final)
    parent, base = os.path.split(final)
    os.makedirs(parent or ".", exist_ok=True)
    for name in os.listdir(parent or "."):
        pid = name[len(base) + 4 :] if name.startswith(base + ".tmp") else ""
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
    tmp = f"{final}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    return tmp


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def replace_dir(tmp: str, final: str) -> None:
    """Move a finished directory `tmp` to `final`, replacing an older one; the old one goes only after. Its
    interim name is this process's own, never a `final.old` that may be someone's backup."""
    final = os.path.realpath(final)
    old = f"{final}.old{os.getpid()}"
    shutil.rmtree(old, ignore_errors=True)
    if os.path.isdir(final):
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def check_writable(folder: str) -> None:
    """Write a file in `folder` (made for the check if need be, then removed again) now, so a read-only place
    fails before hours of work rather than after (OSError, with the path)."""
    made = []
    path = os.path.abspath(folder)
    while not os.path.isdir(path):
        made.append(path)
        path = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-check")
        os.close(fd)
        os.remove(probe)
    finally:
        for path in made:
            if os.path.isdir(path):
                os.rmdir(path)
