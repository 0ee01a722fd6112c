"""The whole recipe of "Pre-training under infinite compute" from one recipe file, stage by stage.

  python tools/recipe.py configs/recipe/tiny.yaml --out runs/demo            # this machine, <= 10 minutes
  python tools/recipe.py configs/recipe/paper.yaml --out runs/paper --backend slurm
  python tools/recipe.py tiny --out runs/demo --search                       # redo the hyperparameter searches

Stages: data -> standard (WD fixed; every size at every budget) -> regularized -> ensembles (K = 1..n, shifted
members) -> distill (sequence-level; logit KD beside it) -> downstream -> fits+report (OUT/REPORT.md, OUT/fits.json,
PNG plots). Running it again
resumes: finished runs are read back, killed ones continue from their checkpoints, nothing finished is
retrained. key=value arguments override recipe fields (e.g. launch.parallel=4 downstream.limit=100).
"""

from __future__ import annotations

import argparse
import sys

from megarecipe.cli.common import Parser, run
from megarecipe.system import quiet_progress_bars


def parse(argv):
    ap = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recipe", help="a recipe file, or a shipped recipe's name (tiny, paper)")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="recipe fields to override")
    ap.add_argument("--out", required=True, help="the pipeline's directory (runs, fits.json, REPORT.md)")
    ap.add_argument(
        "--search",
        action="store_true",
        help="find each size's hyperparameters by the locally-optimal search instead of using the "
        "certified values in the recipe file",
    )
    ap.add_argument("--backend", choices=("local", "slurm"), help="overrides launch.backend")
    ap.add_argument("--parallel", type=int, help="runs at once (overrides launch.parallel)")
    ap.add_argument(
        "--stop-after",
        metavar="STAGE",
        help="stop after this stage (data, standard, regularized, ensembles, distill, downstream)",
    )
    return ap.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)

    quiet_progress_bars()  # lm-eval's, datasets' and transformers' bars would bury the recipe's own lines
    from megarecipe.recipes import recipe_file
    from megarecipe.recipes.pipeline import Pipeline

    overrides = list(args.overrides)
    if args.backend:
        overrides.append(f"launch.backend={args.backend}")
    if args.parallel is not None:
        overrides.append(f"launch.parallel={args.parallel}")

    def pipeline() -> int:
        recipe = recipe_file.load(args.recipe, overrides)
        if args.stop_after and args.stop_after not in Pipeline.STAGES:
            raise recipe_file.RecipeError(
                f"--stop-after {args.stop_after}: not a stage; use one of {', '.join(Pipeline.STAGES)}"
            )
        report = Pipeline(
            recipe, args.out, search=args.search, stop_after=args.stop_after, log=lambda m: print(m, flush=True)
        ).run()
        if not args.stop_after:
            print(f"\nreport: {report}\nbrowse every run: tensorboard --logdir {args.out}")
        return 0

    try:
        return run(pipeline, run_error=2)  # a failed stage (PipelineError) is reported as bad input was
    except (KeyboardInterrupt, SystemExit) as e:  # Ctrl-C, or SIGTERM while runs are live (they are stopped)
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return getattr(e, "code", None) or 130


if __name__ == "__main__":
    sys.exit(main())
