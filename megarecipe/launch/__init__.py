"""Start many training runs and know how each ended, from its run directory alone.

    from megarecipe.launch import RunSpec, launch, state

    specs = [RunSpec("configs/150m.yaml", ["optim.lr=3e-3", "optim.weight_decay=0.8"], "sweeps/x/lr3e-3_wd0.8")]
    results = launch(specs, backend="local", parallel=4, on_done=print)   # blocks until every run has ended
    results["sweeps/x/lr3e-3_wd0.8"].val_loss                              # RunResult: state, val_loss, ...
    state("sweeps/x/lr3e-3_wd0.8")                                        # 'finished', 'running', ...

- Every run starts with run.dir=RUN and run.resume=true: a killed or preempted run continues from its last
  checkpoint, and a finished one is read back (matched by run.json's settings_sha256), never retrained. A run
  dir holding a run with other settings is refused before anything starts, as are bad settings.
- A run that fails is retried once (resuming), then marked failed in run.json with its log's last lines;
  launch() goes on with the others; a later call reads it back as failed unless retry_failed=True. Each run's
  stdout and stderr are appended to RUN/train.log.
- Backends: "local" (megarecipe/launch/pool.py: at most `parallel` runs at once, each with its own port and
  its share of the GPUs or CPU threads; on CPU each run's ranks are forked warm from one import of the training
  stack, megarecipe/launch/warm.py) and "slurm" (megarecipe/launch/slurm.py: one sbatch job array).

This layer reads and starts run directories; it never imports the training stack.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager

from megarecipe.launch.spec import LaunchError, RunResult, RunSpec, check_reuse, number, safe_name, settings_of
from megarecipe.rundir import RunDir

__all__ = ["LaunchError", "RunResult", "RunSpec", "launch", "state", "safe_name", "number", "settings_of"]
BACKENDS = ("local", "slurm")


def state(run_dir: str) -> str:
    """not started / running / interrupted / stopped / finished / failed."""
    return RunDir(run_dir).state()


def launch(
    specs: list[RunSpec],
    backend: str = "local",
    parallel: int = 1,
    retries: int = 1,
    on_done=None,
    slurm_args: list[str] | None = None,
    gpus_per_node: int = 8,
    retry_failed: bool = False,
) -> dict[str, RunResult]:
    """Run every spec to its end; returns run_dir -> RunResult. on_done(result) is called as each run ends
    (runs read back included). A run marked failed by an earlier call is read back as failed unless
    retry_failed. Raises LaunchError, before starting anything, on bad settings."""
    if backend not in BACKENDS:
        raise LaunchError(f"backend {backend!r} is unknown; use one of {', '.join(BACKENDS)}")
    if parallel < 1 or retries < 0:
        raise LaunchError(f"parallel={parallel} must be >= 1 and retries={retries} >= 0")
    dirs = [os.path.realpath(s.run_dir) for s in specs]
    twice = next((d for i, d in enumerate(dirs) if d in dirs[:i]), None)
    if twice:
        raise LaunchError(f"two runs share a run_dir ({twice}); give each run its own directory")
    results, todo = {}, []
    for spec in specs:
        sha, _ = settings_of(spec, cuda=True if backend == "slurm" else None)  # Slurm: GPU nodes, not this one
        done = check_reuse(spec, sha, retry_failed)
        if done is None:
            todo.append(spec)
        else:
            results[spec.run_dir] = done
            if on_done:
                on_done(done)
    if not todo:
        return results
    with _terminate_unwinds():
        if backend == "local":
            from megarecipe.launch.pool import LocalPool

            results.update(LocalPool(parallel, retries, on_done).run(todo))
        else:
            from megarecipe.launch import slurm

            work = os.path.join(os.path.dirname(os.path.abspath(todo[0].run_dir)), ".slurm")
            results.update(slurm.run(todo, parallel, retries, on_done, work, gpus_per_node, slurm_args))
    return results


def _exit(signum, frame):
    raise SystemExit(128 + signum)


@contextmanager
def _terminate_unwinds():
    """SIGTERM to the calling tool becomes SystemExit while runs are live, so the backend's clean-up stops them
    (checkpoint and exit) instead of the tool dying alone and leaving them training. A handler the caller
    installed is kept."""
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
