"""Distil a teacher (a run or an ensemble) into a student: see `python tools/distill.py --help`."""

import sys

from megarecipe.cli.distill import main

if __name__ == "__main__":
    sys.exit(main())
