"""Score an ensemble of finished runs for K = 1..n members: see `python tools/ensemble_eval.py --help`."""
import sys

from megarecipe.cli.ensemble_eval import main

if __name__ == "__main__":
    sys.exit(main())
