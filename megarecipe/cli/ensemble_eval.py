"""Score an ensemble of finished runs (mean of their logits) for K = 1..n members on their held-out tokens.

  python tools/ensemble_eval.py runs/m300-seed* --out runs/ens-300m
  python tools/fit_scaling.py runs/ens-300m --over members --out reports/ens-300m     # L(K) and its asymptote

Members are taken in the order given; they must share the data dir's tokenizer and sequence length.
"""
from __future__ import annotations

import argparse
import os
import sys

from megarecipe.system import has_cuda


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run directories of the members (each with export/)")
    p.add_argument("--out", required=True, help="event directory to write (read by tools/fit_scaling.py)")
    p.add_argument("--device", default="cuda" if has_cuda() else "cpu")
    args = p.parse_args(argv)
    from megarecipe.analysis.heldout import EnsembleError, evaluate_ensemble
    from megarecipe.analysis.runs import RunError

    try:
        losses = evaluate_ensemble(args.runs, args.out, device=args.device)
    except (EnsembleError, RunError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for k, loss in enumerate(losses, start=1):
        print(f"K={k}: val loss {loss:.4f}")
    print(f"wrote {os.path.join(args.out, 'tb')} and {os.path.join(args.out, 'run.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
