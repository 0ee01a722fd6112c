"""Export a finished run as a Hugging Face LlamaForCausalLM directory (weights, config, tokenizer), offline.

  python tools/export_hf.py runs/300m-best --out hf/300m-best
  lm_eval --model hf --model_args pretrained=hf/300m-best --tasks arc_easy ...

Reads RUN/export (written by training whatever its TP/PP/ZeRO layout), or an export dir itself.
"""
from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a run dir (with export/) or an export dir")
    p.add_argument("--out", required=True, help="directory to write")
    args = p.parse_args(argv)
    export = args.run if os.path.isfile(os.path.join(args.run, "model.json")) else os.path.join(args.run, "export")
    if not os.path.isfile(os.path.join(export, "model.json")):
        print(f"error: {args.run}: no export (export/model.json); a finished training run writes RUN/export",
              file=sys.stderr)
        return 2
    try:
        import transformers  # noqa: F401
    except ImportError:
        print('error: transformers is not installed; pip install -e ".[eval]" (make setup does)', file=sys.stderr)
        return 2
    from megarecipe.model.hf import export_hf

    try:
        out = export_hf(export, args.out)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:   # a full disk or a read-only --out: the build beside it is removed
        from megarecipe.errors import os_error_line

        print(f"error: {os_error_line(e, args.out)}", file=sys.stderr)
        return 2
    print(f"wrote {out} (LlamaForCausalLM.from_pretrained / AutoTokenizer.from_pretrained load it offline)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
