"""Check a DeepSpeed hostfile before launching: `python -m megarecipe.hostfile HOSTFILE`.

DeepSpeed's launcher silently falls back to local resources when the hostfile is missing, and its parse
errors arrive after a log dump; here each problem is one line and the launch does not start.
"""
from __future__ import annotations

import logging
import os
import sys


def check_hostfile(path: str) -> dict[str, int]:
    if not os.path.isfile(path):
        raise ValueError(f"hostfile {path!r} not found; write one line per node: '<hostname> slots=<processes>'")
    from deepspeed.launcher.runner import fetch_hostfile
    from deepspeed.utils import logger

    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        pool = fetch_hostfile(path)
    except ValueError as e:
        raise ValueError(f"hostfile {path!r}: {e}; each line must read '<hostname> slots=<processes>'") from None
    finally:
        logger.setLevel(level)
    for host, slots in pool.items():
        if slots < 1:
            raise ValueError(f"hostfile {path!r}: {host} has slots={slots}; give each node at least 1 slot")
    return dict(pool)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m megarecipe.hostfile HOSTFILE", file=sys.stderr)
        return 2
    try:
        pool = check_hostfile(argv[0])
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{len(pool)} node(s), {sum(pool.values())} process(es): " + ", ".join(f"{h}={n}" for h, n in pool.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
