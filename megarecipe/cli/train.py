"""Train one run: `python -m megarecipe.cli.train CONFIG.yaml key=value ...`.

    python -m megarecipe.cli.train configs/tiny.yaml run.dir=runs/x optim.weight_decay=0.8
    launchers/local.sh 2 configs/tiny.yaml run.dir=runs/x            # 2 processes (deepspeed launcher)
    deepspeed --num_gpus 2 --module megarecipe.cli.train configs/tiny.yaml run.dir=runs/x

CONFIG is a YAML file or a preset's name (tiny, 150m, 300m, 600m, 1.4b).
"""

from __future__ import annotations

import os
import sys

from megarecipe.cli.common import fail, process_group_missing, run
from megarecipe.config import ConfigError, load_config
from megarecipe.errors import MegarecipeError
from megarecipe.preflight import check_run
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
    argv = sys.argv[1:] if argv is None else argv
    setup = {}

    def prepare() -> int:
        path, overrides = parse_args(argv)
        setup["cfg"] = load_config(path, overrides)
        setup["layout"] = check_run(setup["cfg"])
        return 0

    code = run(prepare, ranked=True)  # bad settings and data: exit 2, decided before any process group
    if code or not setup:
        return code
    cfg = setup["cfg"]
    return run(
        lambda: _train(cfg, setup["layout"]),
        where=cfg.run.dir,  # the disk filled (or went read-only) under the events or the export
        user_error=3,
        os_error=3,
        ranked=True,
        before_group=process_group_missing,
    )


def _train(cfg, layout) -> int:
    from megarecipe.train.loop import train

    try:
        train(cfg, layout)
    except MegarecipeError:
        raise
    except RuntimeError as e:
        from megarecipe.parallel.distributed import lost_peer

        if not lost_peer(e):
            raise
        # the rank that failed printed its own error; the others only lost contact with it, and rank 0 says so
        if os.environ.get("RANK", "0") == "0":
            first_line = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            return fail(f"stopped: another rank is gone (its own error, if it had one, is above) [{first_line}]", 3)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
