"""Convert a checkpoint of a run to a DeepSpeed universal checkpoint, by hand, offline.

  python tools/convert_checkpoint.py runs/300m --tag step00004000 --to-universal

Writes RUN/checkpoints/TAG.universal/ beside the tag (the tag itself is only read) with DeepSpeed's own converter
(deepspeed.checkpoint.ds_to_universal): every parameter whole, in fp32, with its Adam moments. A resume with
run.resume=true on another world size or TP size uses it (and converts by itself when it is not there yet).
Converting again reuses a finished conversion; a killed one is started over.
"""

from __future__ import annotations

import argparse
import os
import sys

from megarecipe.cli.common import run
from megarecipe.rundir import RunDir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a run dir (with checkpoints/)")
    p.add_argument("--tag", required=True, help="the checkpoint tag to convert (stepNNNNNNNN)")
    p.add_argument(
        "--to-universal", action="store_true", required=True, help="write TAG.universal/ (the one conversion there is)"
    )
    args = p.parse_args(argv)

    ckpt = RunDir(args.run).checkpoints
    return run(lambda: _convert(ckpt, args.tag), where=ckpt, run_error=2)  # a bad checkpoint is bad input here


def _convert(ckpt: str, tag: str) -> int:
    from megarecipe.train import checkpoint, universal

    if not checkpoint.TAG.fullmatch(tag) or not os.path.isdir(os.path.join(ckpt, tag)):
        raise checkpoint.CheckpointError(f"--tag {tag}: no such checkpoint in {ckpt} ({checkpoint._present(ckpt)})")
    problem = checkpoint.incomplete(ckpt, tag)
    if problem:
        older = checkpoint.newest_complete(ckpt, before=tag)
        raise checkpoint.CheckpointError(
            f"--tag {tag}: {problem}; "
            + (f"convert the newest complete one, --tag {older}" if older else "the run has no complete checkpoint")
        )
    saved = checkpoint.saved_resume_key(ckpt, tag)
    why = universal.cannot_convert(saved, {**saved, "pp": 1})
    if why:
        raise checkpoint.CheckpointError(f"--tag {tag} cannot be converted: {why}")
    out = universal.convert(ckpt, tag, saved)
    print(f"wrote {out} (resume on another world size or TP size with run.resume=true)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
