"""Scaling-law fits from run directories: `python tools/fit_scaling.py --help` (megarecipe/recipes/fit_cli.py)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # run from a checkout

from megarecipe.recipes.fit_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
