"""A stand-in job for tests/launch/test_direct.py: `wait` prints `ready RANK PID` once it handles TERM and USR1, then
waits; USR1 prints `usr1 RANK`, TERM prints `stopped RANK` and exits 0 (as the trainer after its checkpoint).
`exit N` prints `out RANK` to stdout and `err RANK` to stderr and exits N."""

import os
import signal
import sys
import time


def main(argv: list[str]) -> int:
    rank = os.environ.get("RANK", "0")
    if argv[0] == "exit":
        print(f"out {rank}")
        print(f"err {rank}", file=sys.stderr)
        return int(argv[1])
    stop = []
    signal.signal(signal.SIGUSR1, lambda s, f: say(f"usr1 {rank}"))
    signal.signal(signal.SIGTERM, lambda s, f: stop.append(s))
    say(f"ready {rank} {os.getpid()}")
    while not stop:
        time.sleep(0.05)
    say(f"stopped {rank}")
    return 0


def say(line: str) -> None:
    os.write(1, f"{line}\n".encode())  # one write: the ranks share the tool's stdout


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
