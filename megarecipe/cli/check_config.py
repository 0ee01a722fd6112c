"""Check a training config for a world of N processes before any is started.

    python -m megarecipe.cli.check_config --world-size 2 configs/tiny.yaml key=value ...

Prints nothing when the config is good; otherwise the trainer's one-line `error: ...` and exits 2. Also checks
the run dir: one in use by another process, a damaged run.json, one that holds a checkpoint without
run.resume=true, a damaged `latest`, or a resume under other settings. The launchers run it first, so a bad
setting is reported in a second or two instead of after every process started.
"""

from __future__ import annotations

import argparse
import os
import sys

from megarecipe.cli.common import Parser, run
from megarecipe.rundir import LOCK, RunDir, RunDirError


def main(argv: list[str] | None = None) -> int:
    ap = Parser(prog="check_config", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world-size", type=int, default=1, help="processes the run will have (default 1)")
    ap.add_config(required=False, help="CONFIG.yaml (default: the defaults alone), as the trainer takes")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    return run(lambda: _check(args), run_error=2)  # a damaged checkpoint or run dir: bad input here, not a run


def _check(args) -> int:
    from megarecipe.config import ConfigError, load_config
    from megarecipe.preflight import check_run

    if args.world_size < 1:
        raise ConfigError(f"--world-size {args.world_size} must be >= 1; give the number of processes")
    cfg = load_config(args.config, args.overrides)
    layout = check_run(cfg, world_size=args.world_size)
    run_dir = RunDir(cfg.run.dir)
    if run_dir.locked():
        raise RunDirError(
            f"run.dir={cfg.run.dir!r} is in use by another process (it holds {LOCK}); wait for it "
            f"to finish or stop it, or choose another run.dir"
        )
    run_dir.info()  # a damaged run.json is refused here
    if os.path.exists(run_dir.checkpoints):  # a resume: checked as the trainer will (its checkpoint code: torch)
        from megarecipe.train.loop import check_run_dir, resume_key

        check_run_dir(cfg, run_dir, resume_key(cfg, layout))
    return 0


if __name__ == "__main__":
    sys.exit(main())
