"""`make demo`: the whole recipe at tiny scale (configs/recipe/tiny.yaml) into runs/demo, then where its report is.
Running it again resumes and trains nothing that finished. Extra arguments go to tools/recipe.py."""

from __future__ import annotations

import sys

from megarecipe.cli.recipe import main as recipe

RECIPE = "tiny"
OUT = "runs/demo"


def main(argv: list[str] | None = None) -> int:

    argv = list(sys.argv[1:] if argv is None else argv)
    return recipe([RECIPE, *([] if "--out" in argv else ["--out", OUT]), *argv])


if __name__ == "__main__":
    sys.exit(main())
