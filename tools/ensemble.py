"""Train, check and score ensembles of seeds: see `python tools/ensemble.py --help`."""

import sys

from megarecipe.cli.ensemble import main

if __name__ == "__main__":
    sys.exit(main())
