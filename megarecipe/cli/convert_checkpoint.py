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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a run dir (with checkpoints/)")
    p.add_argument("--tag", required=True, help="the checkpoint tag to convert (stepNNNNNNNN)")
    p.add_argument(
        "--to-universal", action="store_true", required=True, help="write TAG.universal/ (the one conversion there is)"
    )
    args = p.parse_args(argv)
    from megarecipe.rundir import RunDir
    from megarecipe.train import checkpoint, universal

    ckpt = RunDir(args.run).checkpoints
    try:
        if not checkpoint.TAG.fullmatch(args.tag) or not os.path.isdir(os.path.join(ckpt, args.tag)):
            raise checkpoint.CheckpointError(
                f"--tag {args.tag}: no such checkpoint in {ckpt} ({checkpoint._present(ckpt)})"
            )
        problem = checkpoint.incomplete(ckpt, args.tag)
        if problem:
            older = checkpoint.newest_complete(ckpt, before=args.tag)
            raise checkpoint.CheckpointError(
                f"--tag {args.tag}: {problem}; "
                + (f"convert the newest complete one, --tag {older}" if older else "the run has no complete checkpoint")
            )
        saved = checkpoint.saved_resume_key(ckpt, args.tag)
        why = universal.cannot_convert(saved, {**saved, "pp": 1})
        if why:
            raise checkpoint.CheckpointError(f"--tag {args.tag} cannot be converted: {why}")
        out = universal.convert(ckpt, args.tag, saved)
    except checkpoint.CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        from megarecipe.errors import os_error_line

        print(f"error: {os_error_line(e, ckpt)}", file=sys.stderr)
        return 2
    print(f"wrote {out} (resume on another world size or TP size with run.resume=true)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
