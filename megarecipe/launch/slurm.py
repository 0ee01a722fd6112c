"""The Slurm backend: runs become the tasks of one job array, `sbatch --array=0-(n-1)%parallel`, over
launchers/slurm_array.sbatch, which hands task i's arguments to launchers/slurm.sbatch (srun + torchrun per
node) with its output appended to RUN/train.log.

Issued, for n runs of `processes` ranks each (g = processes when it fits on one node, else gpus_per_node):

    sbatch --parsable --array=0-(n-1)%parallel --job-name=megarecipe-launch --nodes=processes/g
           --gpus-per-node=g --requeue --signal=USR1@120 --output=TASKDIR/%a.out --export=ALL,GPUS_PER_NODE=g
           [extra sbatch args] launchers/slurm_array.sbatch TASKDIR

TASKDIR/<i>.args holds task i's run dir and then its trainer arguments, one per line (every run is started
with run.resume=true). Preemption: Slurm requeues the task (--requeue) and the trainer, asked with SIGUSR1
120 s before the limit or SIGTERM on preemption, checkpoints first; the requeued task resumes from there.
A task that ends unfinished is resubmitted by the rule in policy.py (resume after progress, one retry after a
failure), in a new array of the runs still to do. The launcher polls `squeue -h -t all -j JOB -o %T` until
every task has ended (a requeued task is pending again, and a failing squeue is asked again); the runs' states
come from their directories, not from Slurm. Interrupted (Ctrl-C, SIGTERM), it cancels the array's pending
tasks and sends the running ones SIGUSR1 (`scancel --signal=USR1 --full JOB`): they checkpoint and end.
Started again, it first waits for the arrays an earlier call left in the queue (their ids are in WORKDIR/jobs).
"""

from __future__ import annotations

import os
import subprocess
import time

from megarecipe.launch import policy
from megarecipe.launch.pool import REPO
from megarecipe.launch.spec import LaunchError, RunResult, RunSpec, mark_failed, progress_step, result_of

SCRIPT = REPO / "launchers" / "slurm_array.sbatch"


def sbatch_command(
    specs: list[RunSpec], task_dir: str, parallel: int, gpus_per_node: int = 8, extra: list[str] | None = None
) -> list[str]:
    processes = {s.processes for s in specs}
    if len(processes) != 1:
        raise LaunchError(f"one job array holds runs of one size; got processes {sorted(processes)}")
    n = processes.pop()
    per_node = n if n <= gpus_per_node else gpus_per_node
    if n % per_node:
        raise LaunchError(f"processes={n} is not a multiple of gpus_per_node={gpus_per_node}; use whole nodes")
    return [
        "sbatch",
        "--parsable",
        f"--array=0-{len(specs) - 1}%{parallel}",
        "--job-name=megarecipe-launch",
        f"--nodes={n // per_node}",
        f"--gpus-per-node={per_node}",
        "--requeue",
        "--signal=USR1@120",
        f"--output={task_dir}/%a.out",
        f"--export=ALL,GPUS_PER_NODE={per_node}",
        *(extra or []),
        str(SCRIPT),
        task_dir,
    ]


def write_tasks(specs: list[RunSpec], task_dir: str) -> None:
    os.makedirs(task_dir, exist_ok=True)
    for i, spec in enumerate(specs):
        lines = [os.path.abspath(spec.run_dir), *spec.trainer_args()]
        if any("\n" in a for a in lines):
            raise LaunchError(f"{spec.name}: an argument holds a newline; remove it")
        os.makedirs(spec.run_dir, exist_ok=True)
        tmp = os.path.join(task_dir, f".{i}.args.tmp")
        with open(tmp, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, os.path.join(task_dir, f"{i}.args"))


def submit(specs: list[RunSpec], task_dir: str, parallel: int, gpus_per_node: int, extra) -> str:
    if not SCRIPT.is_file():
        raise LaunchError(f"{SCRIPT} not found: the Slurm backend runs the launchers of a checkout; run from one")
    write_tasks(specs, task_dir)
    cmd = sbatch_command(specs, task_dir, parallel, gpus_per_node, extra)
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO).stdout
    except FileNotFoundError:
        raise LaunchError("sbatch not found; run on a Slurm login node or use --backend local") from None
    except subprocess.CalledProcessError as e:
        raise LaunchError(
            f"sbatch refused the array ({(e.stderr or '').strip()[:300]}); check the sbatch arguments"
        ) from None
    return out.strip().split(";")[0]


# The states a job array's task leaves no more (squeue -t all lists them until MinJobAge). Any other is live:
# PENDING (also after a requeue, with reason BeginTime), REQUEUED, REQUEUE_HOLD, COMPLETING, RUNNING, ...
ENDED = {
    "COMPLETED",
    "CANCELLED",
    "FAILED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
    "OUT_OF_MEMORY",
}


def job_states(job: str) -> list[str] | str:
    """The states of the job's tasks ([] once Slurm has forgotten the job), or squeue's error when it could not
    answer (a busy or restarting slurmctld): that says nothing about the job."""
    p = subprocess.run(["squeue", "-h", "-t", "all", "-j", job, "-o", "%T"], capture_output=True, text=True)
    if p.returncode == 0:
        return p.stdout.split()
    if "Invalid job id" in p.stderr:
        return []
    return p.stderr.strip() or f"squeue exited with status {p.returncode}"


def wait(job: str, patience_s: float = 900) -> None:
    """Until every task of the job has ended. A requeued task is pending again, not ended; squeue failing is
    retried for patience_s before it is an error."""
    poll = float(os.environ.get("MEGARECIPE_SLURM_POLL_S", "30"))
    failing_since = None
    while True:
        states = job_states(job)
        if isinstance(states, str):
            failing_since = failing_since or time.monotonic()
            if time.monotonic() - failing_since > patience_s:
                raise LaunchError(
                    f"squeue cannot tell how job {job} stands ({states[:200]}); check the Slurm "
                    f"controller (sinfo), then start the launcher again: it waits for the job"
                )
        else:
            failing_since = None
            if all(s in ENDED for s in states):
                return
        time.sleep(poll)


def cancel(job: str) -> None:
    """Pending tasks are cancelled first (a signal alone would leave them to start when a slot frees), then the
    running ones are asked to checkpoint and end."""
    subprocess.run(["scancel", "--state=PENDING", job], capture_output=True)
    subprocess.run(["scancel", "--signal=USR1", "--full", job], capture_output=True)


def run(
    specs: list[RunSpec],
    parallel: int,
    retries: int,
    on_done,
    work_dir: str,
    gpus_per_node: int = 8,
    extra: list[str] | None = None,
) -> dict[str, RunResult]:
    jobs_file = os.path.join(work_dir, "jobs")
    if os.path.exists(jobs_file):  # arrays of an earlier call that was killed: let them end first
        for job in open(jobs_file).read().split():
            wait(job)
    counts = policy.tallies(s.run_dir for s in specs)
    results: dict[str, RunResult] = {}
    todo, round_no = list(specs), 0
    while todo:
        round_no += 1
        before = {s.run_dir: progress_step(s.run_dir) for s in todo}
        groups: dict[int, list[RunSpec]] = {}
        for s in todo:
            groups.setdefault(s.processes, []).append(s)
        for n, group in groups.items():
            job = submit(
                group,
                os.path.join(work_dir, f"array-{time.strftime('%Y%m%d-%H%M%S')}-{round_no}-{n}"),
                parallel,
                gpus_per_node,
                extra,
            )
            with open(jobs_file, "a") as f:
                f.write(job + "\n")
            t0 = time.monotonic()
            try:
                wait(job)
            except BaseException:
                cancel(job)
                raise
            for s in group:
                counts[s.run_dir].attempts += 1
                counts[s.run_dir].seconds += time.monotonic() - t0
        again = []
        for s in todo:
            c = counts[s.run_dir]
            action = c.decide(before[s.run_dir], retries)
            if action in policy.AGAIN:
                again.append(s)
            else:
                if action == policy.GIVE_UP:
                    mark_failed(s, "the Slurm task ended without finishing the run")
                results[s.run_dir] = result_of(s, c.attempts, c.seconds)
                if on_done:
                    on_done(results[s.run_dir])
        todo = again
    return results
