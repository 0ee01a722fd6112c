"""Locally optimal hyperparameter search: see `python tools/tune.py --help`."""

import sys

from megarecipe.cli.tune import main

if __name__ == "__main__":
    sys.exit(main())
