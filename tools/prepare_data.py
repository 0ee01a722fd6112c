"""Tokenize text into a data dir for training: see `python tools/prepare_data.py --help`."""

import sys

from megarecipe.cli.prepare_data import main

if __name__ == "__main__":
    sys.exit(main())
