"""`make demo`: prepare the embedded corpus once, then train the tiny Llama with 2 processes under
DeepSpeed ZeRO-1 and say where the TensorBoard logs are. Running it again continues or re-reports the run."""
from __future__ import annotations

import os
import subprocess
import sys
import time

DATA_DIR = "data/default"
RUN_DIR = "runs/demo"


def main(argv: list[str] | None = None) -> int:
    from megarecipe.data.corpus import prepare_default
    from megarecipe.data.errors import DataError

    if not os.path.isfile(os.path.join(DATA_DIR, "meta.json")):
        print(f"== preparing the embedded corpus into {DATA_DIR} ==", flush=True)
        t0 = time.time()
        try:
            meta = prepare_default(DATA_DIR)
        except DataError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"prepared {meta.train_tokens:,} training and {meta.val_tokens:,} validation tokens "
              f"(vocab {meta.vocab_size}) in {time.time() - t0:.0f} s", flush=True)
    print(f"== training configs/tiny.yaml with 2 processes into {RUN_DIR} ==", flush=True)
    cmd = ["launchers/local.sh", "2", "configs/tiny.yaml", f"data.dir={DATA_DIR}", f"run.dir={RUN_DIR}",
           "run.resume=true"]
    code = subprocess.call(cmd)
    if code == 0:
        print(f"\nview the curves with: tensorboard --logdir {RUN_DIR}/tb\n"
              f"exported weights (no DeepSpeed needed to load them): {RUN_DIR}/export")
    return code


if __name__ == "__main__":
    sys.exit(main())
