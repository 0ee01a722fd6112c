"""A stand-in for `python -m megarecipe.cli.train` in launcher tests: it checks the config like the trainer,
holds the run's lock, writes run.json as the trainer does (status, facts, settings_sha256, final val_loss),
and logs each start. The loss is a synthetic function of (lr, weight decay, epochs).

Environment: FAKE_SECONDS (how long a run takes, default 0.3; FAKE_RESUME_SECONDS when it resumes), FAKE_LOG
(a file: one line per start, with the live-run count and the thread share), FAKE_FAIL (a run-name substring that
always fails), FAKE_TERM_STOPS (SIGTERM or SIGUSR1 ends the run stopped, as the trainer's checkpoint-and-exit
does).
"""

import math
import os
import signal
import sys
import time

from megarecipe import rundir
from megarecipe.config import load_config, settings_sha256
from megarecipe.rundir import RunDir


def synthetic_loss(lr: float, wd: float, epochs: int) -> float:
    """Smallest at lr 3e-3, wd 0.8, 8 epochs (in log space)."""
    return (
        3.0 + (math.log10(lr / 3e-3)) ** 2 + 0.3 * math.log2((wd + 0.05) / 0.85) ** 2 + 0.1 * math.log2(epochs / 8) ** 2
    )


def main(argv):
    cfg = load_config(argv[0], argv[1:])
    run = RunDir(cfg.run.dir)
    live_dir = os.environ.get("FAKE_LIVE")
    with run.hold():
        marker = os.path.join(live_dir, str(os.getpid())) if live_dir else None
        start = int((run.info() or {}).get("step") or 0)
        if os.environ.get("FAKE_TERM_STOPS"):  # as the trainer: SIGTERM/USR1 -> a checkpoint, status stopped

            def stop(signum, frame):  # set before the start is logged: a test that saw the start may signal
                run.update(status=rundir.STOPPED, step=start + 1)
                print(f"fake trainer: stopped on {signal.Signals(signum).name} at step {start + 1}", flush=True)
                if marker:
                    os.remove(marker)
                os._exit(0)

            signal.signal(signal.SIGTERM, stop)
            signal.signal(signal.SIGUSR1, stop)
        if marker:
            open(marker, "w").close()
        try:
            if os.environ.get("FAKE_LOG"):
                live = len(os.listdir(live_dir)) if live_dir else 0
                with open(os.environ["FAKE_LOG"], "a") as f:
                    env = os.environ
                    f.write(
                        f"{run.name} live={live} threads={env.get('MEGARECIPE_THREADS')} "
                        f"port={env.get('MASTER_PORT')} gpus={env.get('CUDA_VISIBLE_DEVICES', '-')}\n"
                    )
            facts = {
                "lr": cfg.optim.lr,
                "weight_decay": cfg.optim.weight_decay,
                "epochs": cfg.train.epochs,
                "seed": cfg.run.seed,
            }
            run.update(
                status=rundir.RUNNING,
                kind="train",
                facts=facts,
                settings_sha256=settings_sha256(cfg),
                step=start,
                started=time.time(),
                error=None,
            )
            if cfg.distill.teacher:  # as the trainer names its teacher
                from megarecipe.distill import teacher

                run.update(distill=teacher.identity(cfg.distill.teacher))
            print(f"fake trainer: {run.name} from step {start}", flush=True)
            fail = os.environ.get("FAKE_FAIL")
            seconds = os.environ.get("FAKE_RESUME_SECONDS") if start else None
            time.sleep(float(seconds or os.environ.get("FAKE_SECONDS", "0.3")))
            if fail and fail in run.name:
                print("boom: a deliberate failure", flush=True)
                run.update(status=rundir.FAILED, error="RuntimeError: boom")
                return 3
            loss = synthetic_loss(cfg.optim.lr, cfg.optim.weight_decay, cfg.train.epochs) + 1e-3 * (cfg.run.seed % 7)
            run.update(status=rundir.FINISHED, step=10, final={"val_loss": loss, "step": 10}, ended=time.time())
            print(f"finished at step 10/10; final val/loss {loss:.4f}", flush=True)
        finally:
            if marker:
                os.remove(marker)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
