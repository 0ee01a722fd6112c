"""Check a DeepSpeed hostfile before launching: `python -m megarecipe.cli.check_hostfile HOSTFILE`.

DeepSpeed's launcher silently falls back to local resources when the hostfile is missing, and its parse
errors arrive after a log dump; here each problem is one line and the launch does not start.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import sys

from megarecipe.cli.common import Parser, run
from megarecipe.errors import UserError

# DeepSpeed hands each host name to ssh/pdsh as one argument: a name starting with "-" would be read as an
# option (-oProxyCommand=... runs a command), and shell characters reach the remote shell.
HOST_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


def check_hostfile(path: str) -> dict[str, int]:
    if not os.path.isfile(path):
        raise UserError(f"hostfile {path!r} not found; write one line per node: '<hostname> slots=<processes>'")
    with open(path, errors="replace") as f:  # a hostile name is refused before DeepSpeed (and torch) is imported
        if f.read(1) == "\ufeff":  # DeepSpeed would read the mark as part of the first host's name
            raise UserError(f"hostfile {path!r} starts with a byte-order mark; save it as UTF-8 without a BOM")
        f.seek(0)
        for line in f:
            if line.strip() and not line.lstrip().startswith("#"):
                check_host_name(path, line.split()[0])
    try:
        with _quiet():
            from deepspeed.launcher.runner import fetch_hostfile

            pool = fetch_hostfile(path)
    except ValueError as e:
        raise UserError(f"hostfile {path!r}: {e}; each line must read '<hostname> slots=<processes>'") from None
    for host, slots in pool.items():
        check_host_name(path, host)
        if slots < 1:
            raise UserError(f"hostfile {path!r}: {host} has slots={slots}; give each node at least 1 slot")
    return dict(pool)


@contextlib.contextmanager
def _quiet():
    """DeepSpeed's parser is only reachable through the deepspeed package, whose import detects the accelerator
    and logs "Setting accelerator to CPU ..." to stdout (its logger's handler is bound to sys.stdout), and the
    parser logs the whole file before raising. This tool's stdout is its summary alone (launchers/multinode.sh
    reads it), and its errors are one line: logging is off meanwhile and anything printed goes to stderr."""
    before = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        logging.disable(before)


def check_host_name(path: str, host: str) -> None:
    if HOST_NAME.fullmatch(host):
        return
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    raise UserError(
        f"hostfile {path!r}: host {host!r} is not a plain host name; a name must match "
        f"[A-Za-z0-9_][A-Za-z0-9._-]* (or be an IPv4/IPv6 address)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m megarecipe.cli.check_hostfile", description="Check a DeepSpeed hostfile.")
    parser.add_argument("hostfile", help="one line per node: '<hostname> slots=<processes>'")
    args = parser.parse_args(argv)
    return run(lambda: _summary(check_hostfile(args.hostfile)))


def _summary(pool: dict[str, int]) -> int:
    print(f"{len(pool)} node(s), {sum(pool.values())} process(es): " + ", ".join(f"{h}={n}" for h, n in pool.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
