"""Check a training config for a world of N processes before any is started.

    python -m megarecipe.cli.check_config --world-size 2 configs/tiny.yaml key=value ...

Prints nothing when the config is good; otherwise the trainer's one-line `error: ...` and exits 2. Also checks
the run dir: one in use by another process, a damaged run.json, one that holds a checkpoint without
run.resume=true, a damaged `latest`, or a resume under other settings. The launchers run it first, so a bad
setting is reported in a second or two instead of after every process started.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="check_config", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--world-size", type=int, default=1, help="processes the run will have (default 1)")
    ap.add_argument("args", nargs=argparse.REMAINDER, help="CONFIG.yaml and key=value overrides, as the trainer takes")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)

    from megarecipe.cli.train import parse_args
    from megarecipe.config import ConfigError, load_config
    from megarecipe.data.errors import DataError
    from megarecipe.preflight import check_run
    from megarecipe.rundir import LOCK, RunDir, RunDirError
    from megarecipe.train.checkpoint import CheckpointError
    from megarecipe.train.loop import TrainingError, check_run_dir, resume_key

    try:
        if args.world_size < 1:
            raise ConfigError(f"--world-size {args.world_size} must be >= 1; give the number of processes")
        path, overrides = parse_args(args.args)
        cfg = load_config(path, overrides)
        layout = check_run(cfg, world_size=args.world_size)
        run = RunDir(cfg.run.dir)
        if run.locked():
            raise RunDirError(
                f"run.dir={cfg.run.dir!r} is in use by another process (it holds {LOCK}); wait for it "
                f"to finish or stop it, or choose another run.dir"
            )
        check_run_dir(cfg, run, resume_key(cfg, layout))
    except (ConfigError, DataError, TrainingError, CheckpointError, RunDirError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
