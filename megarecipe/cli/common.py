"""What every tool's command line shares: one parser rule and one way to end on an error.

A tool ends on an error with one line on stderr, `error: ...`, and exit status 2 for bad input (a
`megarecipe.errors.UserError`) or 3 for a run that could not go on (a `RunError`); every error class of the project
derives from one of the two, so `run(body)` catches those two bases and no tool lists its own classes. A tool with
an output path passes it as `where`: a failed read or write there becomes `errors.os_error_line`. A tool that runs
as one rank of many passes `ranked=True`: the line goes through `megarecipe.rank_errors.error_line`, so only the
rank that should speaks.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from megarecipe import errors
from megarecipe.rank_errors import error_line

USER_ERROR, RUN_ERROR = 2, 3


class Parser(argparse.ArgumentParser):
    """A bad flag is one `error: ...` line and exit status 2, not argparse's usage dump.

    `add_config()` gives a tool the rule shared by every tool that takes a config: the positional CONFIG, then
    key=value overrides anywhere after it, mixed with the options (`CONFIG --processes 2 model.vocab_size=128`)."""

    def error(self, message):
        sys.exit(fail(message))

    def add_config(self, required: bool = True, help: str = "a YAML run config (or a preset's name)"):
        """Positional CONFIG (optional unless `required`) and key=value overrides, anywhere among the options:
        the first positional without `=` is the config, every other one must be key=value."""
        self.add_argument("overrides", nargs="*", metavar="CONFIG key=value", help=f"{help}, then overrides")
        self._config_required = required

    def parse_args(self, args=None, namespace=None):
        if not hasattr(self, "_config_required"):
            return super().parse_args(args, namespace)
        parsed = self.parse_intermixed_args(args, namespace)
        given = parsed.overrides
        paths = [a for a in given if "=" not in a]
        if len(paths) > 1:
            self.error(f"{paths[1]}: not a key=value override; give one config, then key=value overrides")
        if not paths and self._config_required:
            self.error("the config: missing; give a YAML file or a preset's name, then any key=value overrides")
        parsed.config = paths[0] if paths else None
        parsed.overrides = [a for a in given if "=" in a]
        return parsed


def fail(message: str, code: int = USER_ERROR) -> int:
    """Print `error: MESSAGE` on stderr; returns the exit status for the tool's main to return."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    return code


def say(error: Exception, code: int, ranked: bool = False, before_group: bool = True) -> int:
    """`fail` for an error; where the tool is one rank of many, through `rank_errors.error_line` (rank 0 prints,
    another rank only where it may be alone in knowing)."""
    if not ranked:
        return fail(str(error), code)
    line = error_line(error, before_group)
    if line:
        print(line, file=sys.stderr, flush=True)
    return code


def exit_code(error: Exception, user_error: int = USER_ERROR, run_error: int = RUN_ERROR) -> int:
    """2 for bad input, 3 for a run that could not go on, unless a tool says otherwise."""
    return user_error if isinstance(error, errors.UserError) else run_error


def run(
    body: Callable[[], int],
    *,
    where: str | None = None,
    user_error: int = USER_ERROR,
    run_error: int = RUN_ERROR,
    os_error: int = USER_ERROR,
    ranked: bool = False,
    before_group: bool | Callable[[], bool] = True,
) -> int:
    """body()'s exit status, or one error line and its status: a UserError `user_error` (2), a RunError
    `run_error` (3), an OSError, where the tool writes to the path `where`, `os_error` (2). Without `where` an
    OSError is not the user's to act on and goes up as it is. `ranked`: print through `rank_errors`, with
    `before_group` (or its value when called) telling whether the ranks had no process group yet."""

    def group() -> bool:
        return before_group() if callable(before_group) else before_group

    try:
        return body()
    except errors.MegarecipeError as e:
        return say(e, exit_code(e, user_error, run_error), ranked, group())
    except OSError as e:
        if where is None:
            raise
        line = errors.os_error_line(e, where)
        return say(errors.RunError(line), os_error, ranked, group())


def process_group_missing() -> bool:
    """True before the ranks' process group exists (or in a process that never has one)."""
    if "torch" not in sys.modules:
        return True
    import torch.distributed as dist

    return not dist.is_initialized()
