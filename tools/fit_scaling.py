"""Scaling-law fits from run directories: see `python tools/fit_scaling.py --help`."""

import sys

from megarecipe.cli.fit_scaling import main

if __name__ == "__main__":
    sys.exit(main())
