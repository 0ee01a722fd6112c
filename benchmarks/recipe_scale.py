"""Time candidate scales for the tiny recipe: a few runs through the launcher, two at once, one thread each.

  python benchmarks/recipe_scale.py --out /tmp/scale --case h96_wd0.1 model.hidden_size=96 model.ffn_hidden_size=256 \
      optim.weight_decay=0.1 --case h96_wd1.6 model.hidden_size=96 model.ffn_hidden_size=256 optim.weight_decay=1.6

Prints each run's final val/loss and wall seconds, and the CPU seconds of all runs together (comparable on a shared
machine, unlike wall time). Common settings: data/recipe-tiny (vocab 1024), seq 64, 32 sequences a step, D 32k.
"""

import argparse
import resource
import time

from megarecipe.launch import RunSpec, launch

COMMON = [
    "data.dir=data/recipe-tiny",
    "data.val_tokens=32768",
    "data.train_tokens=32768",
    "model.seq_len=64",
    "train.global_batch_size=32",
    "train.micro_batch_size=32",
    "train.eval_every=100000",
    "train.epochs=16",
    "train.progress=false",
    "parallel.ds_config=zero0",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--case", nargs="+", action="append", required=True, metavar=("NAME", "KEY=VALUE"))
    ap.add_argument("--parallel", type=int, default=2)
    args = ap.parse_args()
    specs = [RunSpec("tiny", [*COMMON, *case[1:]], f"{args.out}/{case[0]}") for case in args.case]
    t0 = time.time()
    results = launch(specs, parallel=args.parallel)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    for r in results.values():
        print(
            f"{r.name:24s} {r.state:9s} val/loss {r.val_loss if r.val_loss is None else round(r.val_loss, 4)}  "
            f"{r.seconds:.0f} s"
        )
    print(f"all: {time.time() - t0:.0f} s wall, {kids.ru_utime + kids.ru_stime:.0f} s CPU")


if __name__ == "__main__":
    main()
