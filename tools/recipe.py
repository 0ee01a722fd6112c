"""The whole recipe from one recipe file: see `python tools/recipe.py --help`."""

import sys

from megarecipe.cli.recipe import main

if __name__ == "__main__":
    sys.exit(main())
