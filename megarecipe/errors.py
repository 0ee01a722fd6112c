"""The errors a user can act on. Each message is one line naming the field, file or value and the fix; the
tools print it as `error: ...` and exit 2 (bad input) or 3 (a run that could not go on), never a traceback."""

import errno
import re


class MegarecipeError(Exception):
    """The base of every error the tools report in one line."""


class UserError(MegarecipeError, ValueError):
    """Bad input: a setting, a file, a flag. Exit status 2."""


class ConfigError(UserError):
    """A bad setting: the message names the field and the fix."""


class DataError(UserError):
    """Bad input or a bad data dir: the message names the file or field and the fix."""


class RunError(MegarecipeError, RuntimeError):
    """A run that cannot go on (a non-finite loss, a damaged checkpoint, a held run dir). Exit status 3."""


def os_error_line(e: OSError, where: str) -> str:
    """A failed read or write as one line: the path (the error's own, else `where`), what the system said, and
    what to do. A full disk keeps what was complete before: the output is built beside its place and moved in
    whole, so nothing half-written is left in its place."""
    fixes = {
        errno.ENOSPC: "the disk is full: free space there, or write elsewhere, and run the same command again",
        errno.EDQUOT: "the disk quota is used up: free space, or write elsewhere, and run the same command again",
        errno.EROFS: "that file system is read-only: write elsewhere",
        errno.EACCES: "no permission there: write elsewhere or change its permissions",
        errno.EPERM: "no permission there: write elsewhere or change its permissions",
    }
    path = str(e.filename) if e.filename else where
    if re.search(r"\.tmp\d+(/|$)", path):  # a build dir beside the output, removed by now: name the output
        path = where
    return f"{path}: {e.strerror or e}; {fixes.get(e.errno, 'check the path and try again')}"
