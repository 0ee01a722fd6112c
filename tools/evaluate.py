"""Downstream evaluation through lm-eval, offline: see `python tools/evaluate.py --help`."""

import sys

from megarecipe.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
