"""Train one run: `python -m megarecipe.cli.train CONFIG.yaml key=value ...`.

    python -m megarecipe.cli.train configs/tiny.yaml run.dir=runs/x optim.weight_decay=0.8
    launchers/local.sh 2 configs/tiny.yaml run.dir=runs/x            # 2 processes (deepspeed launcher)
    deepspeed --num_gpus 2 --module megarecipe.cli.train configs/tiny.yaml run.dir=runs/x

CONFIG is a YAML file or a preset's name (tiny, 150m, 300m, 600m, 1.4b).
"""
from __future__ import annotations

import os
import sys

from megarecipe.config import ConfigError, load_config, resolve_layout
from megarecipe.data.errors import DataError
from megarecipe.rundir import RunDirError


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
    from megarecipe.checkpoint import CheckpointError
    from megarecipe.train import TrainingError, train

    first = int(os.environ.get("RANK", "0")) == 0
    try:
        path, overrides = parse_args(sys.argv[1:] if argv is None else argv)
        cfg = load_config(path, overrides)
        layout = resolve_layout(cfg)
    except (ConfigError, DataError) as e:
        if first:
            print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        train(cfg, layout)
    except (TrainingError, DataError, CheckpointError, RunDirError) as e:
        if first:
            print(f"error: {e}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
