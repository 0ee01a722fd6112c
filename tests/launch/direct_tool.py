"""A tool that runs tests/launch/direct_job.py through megarecipe.launch.direct: `PROCESSES JOB-ARGS...`.
The forkserver preloads nothing of the training stack: the job needs none of it."""

import sys

from megarecipe.launch import direct, warm


def main(argv: list[str]) -> int:
    warm.PRELOAD[:] = ["megarecipe.launch.server_env"]
    return direct.run(argv[1:], processes=int(argv[0]), module="tests.launch.direct_job")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
