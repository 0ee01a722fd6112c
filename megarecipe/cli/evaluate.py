"""Downstream evaluation (lm-eval, offline data) of a run or an ensemble, and a table across several.

  python tools/evaluate.py runs/300m-best --tasks arc_easy,piqa,sciq
  python tools/evaluate.py ens/300m --tasks arc_easy,piqa,sciq          # a dir whose ensemble.json lists runs
  python tools/evaluate.py runs/300m-best --tasks hellaswag --limit 200
  python tools/evaluate.py --compare runs/a runs/b ens/300m             # what was evaluated already
  python tools/evaluate.py --write-tasks tasks/                         # for lm_eval --include_path tasks/

Results: RUN/eval/<task>.json (lm-eval's), RUN/eval/results.md, eval/<task>/acc and acc_norm in RUN/tb.
Tasks with offline data: arc_easy, arc_challenge, piqa, sciq, hellaswag, winogrande, openbookqa, boolq.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

from megarecipe import atomic
from megarecipe.analysis.tasks import check_tasks, write_task_dir
from megarecipe.cli.common import Parser, fail, run
from megarecipe.rundir import EVAL as EVAL_DIR
from megarecipe.system import check_device

DEFAULT_TASKS = "arc_easy,arc_challenge,piqa,sciq"


def main(argv: list[str] | None = None) -> int:
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", help="a run dir (with export/), an export dir or an ensemble dir")
    p.add_argument("--tasks", default=None, help=f"comma-separated task names (default: {DEFAULT_TASKS})")
    p.add_argument("--limit", type=int, default=None, help="score only the first N items of each task")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when there is one)")
    p.add_argument("--max-resident", type=int, default=4, help="ensemble members held in memory at once")
    p.add_argument("--log-samples", action="store_true", help="also write RUN/eval/<task>.samples.json (per item)")
    p.add_argument("--compare", action="store_true", help="print a table across PATHS already evaluated")
    p.add_argument("--metric", default="acc_norm", choices=["acc", "acc_norm"], help="the --compare figure")
    p.add_argument("--write-tasks", metavar="DIR", help="write the offline task YAMLs for lm_eval --include_path")
    args = p.parse_args(argv)
    tasks = [t.strip() for t in (args.tasks or DEFAULT_TASKS).split(",") if t.strip()]
    return run(lambda: _main(args, tasks))


def _main(args, tasks: list[str]) -> int:
    if args.write_tasks:
        print(f"wrote {write_task_dir(args.write_tasks, tasks if args.tasks else None)}")
        return 0
    if not args.paths:
        return fail("paths: none given; name a run, export or ensemble dir")
    if args.compare:
        return _compare(args.paths, args.metric)
    return _evaluate(args, tasks)


def _evaluate(args, tasks: list[str]) -> int:

    if args.limit is not None and args.limit < 1:
        return fail(f"--limit {args.limit}: must be at least 1; leave it out to score every item")
    for flag, value in (("--batch-size", args.batch_size), ("--max-resident", args.max_resident)):
        if value < 1:
            return fail(f"{flag} {value}: must be at least 1")
    check_device(args.device)
    check_tasks(tasks)
    for path in args.paths:  # every path before any scoring
        code = run(functools.partial(_check_path, path), where=os.path.join(path, EVAL_DIR))
        if code:
            return code
    for path in args.paths:  # an OSError: the disk filled while the results were written
        code = run(functools.partial(_evaluate_path, args, path, tasks), where=os.path.join(path, EVAL_DIR))
        if code:
            return code
    return 0


def _check_path(path: str) -> int:
    from megarecipe.analysis.lm_eval_model import check_members, member_exports

    check_members(member_exports(path))
    atomic.check_writable(os.path.join(path, EVAL_DIR))  # before the scoring, not after it
    return 0


def _evaluate_path(args, path: str, tasks: list[str]) -> int:
    from megarecipe.analysis.downstream import TABLE_FILE, evaluate, results_table, write_results

    output = evaluate(
        path,
        tasks,
        limit=args.limit,
        batch_size=args.batch_size,
        device=args.device,
        max_resident=args.max_resident,
        log_samples=args.log_samples,
    )
    stored = write_results(path, output, limit=args.limit)
    print(results_table(stored, title=os.path.basename(os.path.normpath(path))))
    print(f"wrote {os.path.join(path, EVAL_DIR, TABLE_FILE)}")
    return 0


def _compare(paths: list[str], metric: str) -> int:
    from megarecipe.analysis.downstream import compare_table, read_results

    for path in paths:
        if not read_results(path):
            return fail(f"{path}: no evaluation results ({EVAL_DIR}/*.json); run tools/evaluate.py {path} first")
    print(compare_table(paths, metric))
    return 0


if __name__ == "__main__":
    sys.exit(main())
