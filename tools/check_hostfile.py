"""Check a DeepSpeed hostfile before launching: see `python tools/check_hostfile.py --help`."""

import sys

from megarecipe.cli.check_hostfile import main

if __name__ == "__main__":
    sys.exit(main())
