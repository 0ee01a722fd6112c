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
import os
import sys

DEFAULT_TASKS = "arc_easy,arc_challenge,piqa,sciq"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    from megarecipe.analysis.tasks import TaskError

    tasks = [t.strip() for t in (args.tasks or DEFAULT_TASKS).split(",") if t.strip()]
    try:
        if args.write_tasks:
            from megarecipe.analysis.tasks import write_task_dir

            print(f"wrote {write_task_dir(args.write_tasks, tasks if args.tasks else None)}")
            return 0
        if not args.paths:
            return _fail("paths: none given; name a run, export or ensemble dir")
        if args.compare:
            return _compare(args.paths, args.metric)
        return _evaluate(args, tasks)
    except TaskError as e:
        return _fail(str(e))


def _evaluate(args, tasks: list[str]) -> int:
    from megarecipe.analysis.downstream import EVAL_DIR, TABLE_FILE, evaluate, results_table, write_results
    from megarecipe.analysis.lm_eval_model import ModelSourceError, check_members, member_exports
    from megarecipe.analysis.tasks import check_tasks

    if args.limit is not None and args.limit < 1:
        return _fail(f"--limit {args.limit}: must be at least 1; leave it out to score every item")
    for flag, value in (("--batch-size", args.batch_size), ("--max-resident", args.max_resident)):
        if value < 1:
            return _fail(f"{flag} {value}: must be at least 1")
    from megarecipe.system import check_device

    try:
        check_device(args.device)
    except ValueError as e:
        return _fail(str(e))
    from megarecipe import atomic
    from megarecipe.errors import os_error_line

    try:
        check_tasks(tasks)
        for path in args.paths:
            check_members(member_exports(path))
            atomic.check_writable(os.path.join(path, EVAL_DIR))  # before the scoring, not after it
    except ModelSourceError as e:
        return _fail(str(e))
    except OSError as e:
        return _fail(os_error_line(e, os.path.join(path, EVAL_DIR)))
    for path in args.paths:
        try:
            output = evaluate(
                path,
                tasks,
                limit=args.limit,
                batch_size=args.batch_size,
                device=args.device,
                max_resident=args.max_resident,
                log_samples=args.log_samples,
            )
        except ModelSourceError as e:
            return _fail(str(e))
        try:
            stored = write_results(path, output, limit=args.limit)
        except OSError as e:  # the disk filled while the results were written
            return _fail(os_error_line(e, os.path.join(path, EVAL_DIR)))
        print(results_table(stored, title=os.path.basename(os.path.normpath(path))))
        print(f"wrote {os.path.join(path, EVAL_DIR, TABLE_FILE)}")
    return 0


def _compare(paths: list[str], metric: str) -> int:
    from megarecipe.analysis.downstream import EVAL_DIR, compare_table, read_results

    for path in paths:
        if not read_results(path):
            return _fail(f"{path}: no evaluation results ({EVAL_DIR}/*.json); run tools/evaluate.py {path} first")
    print(compare_table(paths, metric))
    return 0


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
