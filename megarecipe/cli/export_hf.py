"""Export a run as a Hugging Face LlamaForCausalLM directory (weights, config, generation config, tokenizer),
offline.

  python tools/export_hf.py runs/300m-best --out hf/300m-best
  python tools/export_hf.py runs/300m-long --tag step00004000 --out hf/300m-step4000
  lm_eval --model hf --model_args pretrained=hf/300m-best --tasks arc_easy ...

Reads RUN/export (written when training finishes, whatever its TP/PP/ZeRO layout), or an export dir itself.
With --tag: any complete checkpoint of a stopped or running run, consolidated by as many processes as the run
had (its layout rebuilt, on this machine's devices); the run itself is not written to.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

from megarecipe import rundir
from megarecipe.cli.common import Parser, fail, run
from megarecipe.errors import UserError
from megarecipe.launch import warm
from megarecipe.launch.pool import visible_gpus
from megarecipe.rundir import RunDir
from megarecipe.system import free_port


def main(argv: list[str] | None = None) -> int:
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a run dir (with export/) or an export dir")
    p.add_argument("--out", required=True, help="directory to write")
    p.add_argument("--tag", help="a checkpoint tag (stepNNNNNNNN) of the run to export instead of RUN/export")
    args = p.parse_args(argv)
    try:
        import transformers  # noqa: F401
    except ImportError:
        return fail('transformers is not installed; pip install -e ".[eval]" (make setup does)')
    # a bad checkpoint is bad input here; an OSError: a full disk or a read-only --out (the build beside it is removed)
    return run(lambda: _export(args), where=args.out, run_error=2)


def _export(args) -> int:
    from megarecipe.model.hf import export_hf

    if args.tag:
        with tempfile.TemporaryDirectory(prefix=".export-", dir=_parent(args.out)) as tmp:
            export = _export_checkpoint(args.run, args.tag, os.path.join(tmp, rundir.EXPORT))
            out = export_hf(export, args.out, origin={"run": os.path.abspath(args.run), "tag": args.tag})
    else:
        export = args.run if os.path.isfile(os.path.join(args.run, rundir.MODEL_JSON)) else RunDir(args.run).export
        if not os.path.isfile(os.path.join(export, rundir.MODEL_JSON)):
            raise UserError(
                f"{args.run}: no export (export/model.json); a finished training run writes "
                f"RUN/export, and --tag stepN exports a checkpoint of a stopped or running one"
            )
        out = export_hf(export, args.out)
    print(f"wrote {out} (LlamaForCausalLM.from_pretrained / AutoTokenizer.from_pretrained load it offline)")
    return 0


def _parent(out: str) -> str:
    parent = os.path.dirname(os.path.realpath(out))
    os.makedirs(parent, exist_ok=True)
    return parent


def _export_checkpoint(run: str, tag: str, dst: str) -> str:
    """RUN/checkpoints/TAG as an export at dst, by megarecipe.train.export_checkpoint: its ranks started warm
    where the trainer's are, else under torchrun."""
    from megarecipe.train import checkpoint

    ckpt = RunDir(run).checkpoints
    if not os.path.isdir(os.path.join(ckpt, tag)):
        raise UserError(f"--tag {tag}: no such checkpoint in {ckpt} ({checkpoint._present(ckpt)})")
    problem = checkpoint.incomplete(ckpt, tag)
    if problem:
        older = checkpoint.newest_complete(ckpt, before=tag)
        raise UserError(
            f"--tag {tag}: {problem}; "
            + (
                f"export the newest complete one, --tag {older}"
                if older
                else "the run has no complete checkpoint before it"
            )
        )
    world = checkpoint.saved_resume_key(ckpt, tag)["world_size"]
    program = "megarecipe.train.export_checkpoint"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(world),
        "--master_port",
        str(free_port()),
        "-m",
        program,
        run,
        tag,
        dst,
    ]
    if warm.cold_reason(visible_gpus()) is None:  # its ranks forked from one import of the stack, not one each
        with tempfile.TemporaryDirectory() as logs:
            err = os.path.join(logs, "stderr")
            code = warm.start(
                [run, tag, dst],
                dict(os.environ),
                os.getcwd(),
                os.path.join(logs, "stdout"),
                err,
                processes=world,
                module=program,
            ).wait()
            with open(err, errors="replace") as f:
                done = subprocess.CompletedProcess(cmd, code, "", f.read())
    else:
        done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not os.path.isfile(os.path.join(dst, rundir.MODEL_JSON)):
        last = [line for line in done.stderr.splitlines() if line.strip() and "Traceback" not in line][-1:] or ["?"]
        raise UserError(
            f"--tag {tag}: consolidating the checkpoint with {world} process(es) failed "
            f"({last[0].strip()[:200]}); run `{' '.join(cmd)}` to see why"
        )
    return dst


if __name__ == "__main__":
    sys.exit(main())
