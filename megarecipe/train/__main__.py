"""`python -m megarecipe.train CONFIG key=value ...`: the same command as `python -m megarecipe.cli.train`."""

import sys

from megarecipe.cli.train import main

sys.exit(main())
