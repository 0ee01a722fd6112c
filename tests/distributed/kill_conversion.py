"""`main([CKPT_DIR, TAG])`: a universal conversion that SIGKILLs itself after DeepSpeed's converter wrote the
parameter folders. Run in a process of its own (test_elastic.py forks it from the warm server): a bare fork of the
test process, which holds torch's threads, can deadlock in the child."""

import os
import signal


def main(argv: list[str]) -> int:
    from deepspeed.checkpoint import ds_to_universal

    from megarecipe.train import universal

    ds_to_universal._save_optimizer_state = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
    universal.convert(argv[0], argv[1], {"zero_stage": 1, "tp": 1})
    return 0
