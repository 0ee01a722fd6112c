"""What to do when a run's process ends: the same rule for every backend, read from the run directory."""

from __future__ import annotations

from megarecipe import rundir
from megarecipe.rundir import RunDir

DONE, RESUME, RETRY, GIVE_UP = "done", "resume", "retry", "give up"
STOPPED = rundir.STOPPED  # train.stop_after reached: the run stays stopped
MAX_RESUMES = 50  # preemptions of one run in one call, a guard against a loop


def next_action(run_dir: str, step_before: int, failures: int, retries: int, resumes: int) -> str:
    """finished -> done. Held by another process -> resume (wait for it, then read it back or resume it).
    Stopped or killed after making progress (a preemption, a time limit) -> resume, not counted as a failure.
    Stopped without progress (train.stop_after reached) -> stopped. Anything else (failed, crashed, killed before
    any progress) -> retry while failures <= retries, then give up."""
    run = RunDir(run_dir)
    st = run.state()
    if st == rundir.FINISHED:
        return DONE
    if st == rundir.RUNNING and resumes < MAX_RESUMES:
        # another process took the run between our check and our start (ours was refused): wait for it, as for
        # any held run, rather than count a failure
        return RESUME
    step = int((run.info() or {}).get("step") or 0)
    progressed = step > step_before
    if st in (rundir.STOPPED, rundir.INTERRUPTED) and progressed and resumes < MAX_RESUMES:
        return RESUME
    if st == rundir.STOPPED:
        return STOPPED
    return RETRY if failures <= retries else GIVE_UP
