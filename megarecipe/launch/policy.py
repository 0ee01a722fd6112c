"""What to do when a run's process ends: the same rule for every backend, read from the run directory."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass
class Tally:
    """One run's bookkeeping within one launcher call, the same for every backend: how often it was started,
    how often it failed and was retried, how often it was resumed, and the seconds its attempts ran."""

    run_dir: str
    attempts: int = 0
    failures: int = 0
    resumes: int = 0
    seconds: float = 0.0

    def decide(self, step_before: int, retries: int) -> str:
        """next_action for the attempt that just ended (counted as a failure if it failed), then counted: a resume
        or a retry adds to resumes or failures. The run goes back to the queue when the answer is in AGAIN."""
        action = next_action(self.run_dir, step_before, self.failures + 1, retries, self.resumes)
        if action == RESUME:
            self.resumes += 1
        elif action == RETRY:
            self.failures += 1
        return action


AGAIN = (RESUME, RETRY)  # the actions that start the run again


def tallies(run_dirs) -> dict[str, Tally]:
    """A fresh Tally per run directory."""
    return {d: Tally(d) for d in run_dirs}
