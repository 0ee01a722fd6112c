"""Which ranks print a failed run's one-line error: each rank decides alone.

No collective is involved: a rank that fails may be the only one that knows, and waiting to hear from the others
(blocked in a collective of their own, or already killed by the launcher) could hang. Rank 0 prints the plain
line, as a one-process run does. Any other rank prints it prefixed with its rank, `error (rank 3): ...`, unless
rank 0 is sure to print the same line:
- the ranks decided the error together through a collective (a damaged checkpoint, a non-finite loss), so every
  rank raises it alike: marked with `agreed(error)`;
- it came before the process group existed, from the arguments and the files alone: the ranks of one node read
  the same ones, so there the first rank of each node other than rank 0's speaks for it (a data dir missing on
  one node still shows, once).
"""

from __future__ import annotations

import os

_AGREED = "megarecipe_agreed_by_all_ranks"


def agreed(error: Exception) -> Exception:
    """Mark an error every rank raises alike because the ranks decided it together."""
    setattr(error, _AGREED, True)
    return error


def error_line(error: Exception, before_group: bool, environ=None) -> str | None:
    """The line this rank prints on stderr for a user-facing error, or None to stay quiet."""
    environ = os.environ if environ is None else environ
    rank = int(environ.get("RANK", "0"))
    local_rank = int(environ.get("LOCAL_RANK", rank))
    if rank == 0:
        return f"error: {error}"
    if getattr(error, _AGREED, False) or (before_group and local_rank != 0):
        return None
    return f"error (rank {rank}): {error}"
