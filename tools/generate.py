"""Sample text from a run, an export or an ensemble: see `python tools/generate.py --help`."""

import sys

from megarecipe.cli.generate import main

if __name__ == "__main__":
    sys.exit(main())
