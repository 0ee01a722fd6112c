"""Plan, measure and write ZeRO / TP / PP layouts: see `python tools/zero_plan.py --help`."""

import sys

from megarecipe.cli.zero_plan import main

if __name__ == "__main__":
    sys.exit(main())
