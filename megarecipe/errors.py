"""The errors a user can act on. Each message is one line naming the field, file or value and the fix; the
tools print it as `error: ...` and exit 2 (bad input) or 3 (a run that could not go on), never a traceback."""


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
