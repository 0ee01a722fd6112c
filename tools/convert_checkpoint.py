"""Convert a run's checkpoint to a DeepSpeed universal checkpoint: see `python tools/convert_checkpoint.py --help`."""

import sys

from megarecipe.cli.convert_checkpoint import main

if __name__ == "__main__":
    sys.exit(main())
