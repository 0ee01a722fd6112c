"""A stand-in job for tests/launch/test_direct.py: `wait` prints `ready RANK PID` once it handles TERM and USR1, then
waits; USR1 prints `usr1 RANK`, TERM prints `stopped RANK` and exits 0 (as the trainer after its checkpoint).
`exit N [DIR]` prints `out RANK` to stdout and `err RANK` to stderr and exits N; with DIR, only once every rank has
printed (a file per rank there): a launcher that stops the other ranks when one fails would cut a slower one short.
`last-fails N`: the last rank exits N at once, the others sleep until a signal kills them."""

import os
import signal
import sys
import time


def main(argv: list[str]) -> int:
    rank = os.environ.get("RANK", "0")
    if argv[0] == "exit":
        say(f"out {rank}")  # one write each: print() makes two when unbuffered (PYTHONUNBUFFERED), and they interleave
        os.write(2, f"err {rank}\n".encode())
        if len(argv) > 2:
            open(os.path.join(argv[2], rank), "w").close()
            deadline = time.time() + 60
            while len(os.listdir(argv[2])) < int(os.environ.get("WORLD_SIZE", "1")) and time.time() < deadline:
                time.sleep(0.05)
        return int(argv[1])
    if argv[0] == "last-fails":
        if int(rank) == int(os.environ.get("WORLD_SIZE", "1")) - 1:
            return int(argv[1])
        time.sleep(60)
        return 0
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
