"""Train one run: `python -m megarecipe.cli.train CONFIG.yaml key=value ...`.

    python -m megarecipe.cli.train configs/tiny.yaml run.dir=runs/x optim.weight_decay=0.8
    launchers/local.sh 2 configs/tiny.yaml run.dir=runs/x            # 2 processes (deepspeed launcher)
    deepspeed --num_gpus 2 --module megarecipe.cli.train configs/tiny.yaml run.dir=runs/x

CONFIG is a YAML file or a preset's name (tiny, 150m, 300m, 600m, 1.4b).
"""

from __future__ import annotations

import os
import sys

from megarecipe.config import ConfigError, load_config
from megarecipe.data.errors import DataError
from megarecipe.errors import RunError, os_error_line
from megarecipe.preflight import check_run
from megarecipe.rank_errors import error_line
from megarecipe.rundir import RunDirError
from megarecipe.system import stop_with_launcher, watch_stop_signals


def parse_args(argv: list[str]) -> tuple[str | None, list[str]]:
    """A YAML path and key=value overrides; DeepSpeed's launcher adds --local_rank, which is dropped."""
    path, overrides, skip = None, [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg.startswith("--local_rank"):
            skip = "=" not in arg
        elif arg in ("-h", "--help"):
            print(__doc__)
            sys.exit(0)
        elif "=" not in arg and not arg.startswith("-") and path is None:
            path = arg
        elif arg.startswith("-"):
            raise ConfigError(f"unknown option {arg!r}; pass a YAML file and key=value overrides")
        else:
            overrides.append(arg)
    return path, overrides


def main(argv: list[str] | None = None) -> int:
    watch_stop_signals()
    stop_with_launcher()
    from megarecipe.train.checkpoint import CheckpointError
    from megarecipe.train.loop import TrainingError, train

    try:
        path, overrides = parse_args(sys.argv[1:] if argv is None else argv)
        cfg = load_config(path, overrides)
        layout = check_run(cfg)
    except (ConfigError, DataError) as e:
        report(e, before_group=True)
        return 2
    try:
        train(cfg, layout)
    except (TrainingError, DataError, CheckpointError, RunDirError, RunError) as e:
        import torch.distributed as dist

        report(e, before_group=not dist.is_initialized())
        return 3
    except OSError as e:  # the disk filled (or went read-only) under the events or the export
        import torch.distributed as dist

        report(RunError(os_error_line(e, cfg.run.dir)), before_group=not dist.is_initialized())
        return 3
    except RuntimeError as e:
        from megarecipe.parallel.distributed import lost_peer

        if not lost_peer(e):
            raise
        # the rank that failed printed its own error; the others only lost contact with it, and rank 0 says so
        if os.environ.get("RANK", "0") == "0":
            first_line = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            print(
                f"error: stopped: another rank is gone (its own error, if it had one, is above) [{first_line}]",
                file=sys.stderr,
                flush=True,
            )
        return 3
    return 0


def report(error: Exception, before_group: bool) -> None:
    """Rank 0 prints the line; another rank prints it with its rank when it may be alone in knowing it."""
    line = error_line(error, before_group)
    if line:
        print(line, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
