"""Check a training config before launching: see `python tools/check_config.py --help`."""

import sys

from megarecipe.cli.check_config import main

if __name__ == "__main__":
    sys.exit(main())
