"""The local backend: a pool of concurrent training runs on this machine.

On CPU each run starts warm (megarecipe/launch/warm.py): its ranks are forked from a server that imported the
training stack once. Otherwise (GPUs, MEGARECIPE_WARM=0) a run is `python -m megarecipe.cli.train` (one process)
or `launchers/local.sh N` (N processes through the deepspeed launcher; `deepspeed --num_gpus N --module
megarecipe.cli.train` in an installed copy). Either way each run has its own
rendezvous port, its output appended to RUN/train.log, and its share of the machine: on GPUs, `processes`
devices of its own (CUDA_VISIBLE_DEVICES); on CPU, cpu_count // (parallel * processes) threads per rank
(OMP_NUM_THREADS and MEGARECIPE_THREADS, which the trainer obeys). At most `parallel` runs are alive at once.
The trainer command can be replaced for tests with MEGARECIPE_TRAINER (a command line that takes the trainer's
arguments).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from megarecipe.launch import policy, warm
from megarecipe.launch.spec import LOG, LaunchError, RunResult, RunSpec, mark_failed, progress_step, result_of
from megarecipe.rundir import FINISHED, RunDir
from megarecipe.system import free_port

REPO = Path(__file__).resolve().parents[2]
POLL_S = 0.2


def visible_gpus() -> list[str]:
    """GPU ids this process may use: CUDA_VISIBLE_DEVICES, else what nvidia-smi lists, else none."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def threads_per_rank(parallel: int, processes: int) -> int:
    return max(1, (os.cpu_count() or 1) // (parallel * processes))


def command(spec: RunSpec) -> list[str]:
    fake = os.environ.get("MEGARECIPE_TRAINER")
    if fake:
        return [*shlex.split(fake), *spec.trainer_args()]
    if spec.processes == 1:
        return [sys.executable, "-m", "megarecipe.cli.train", *spec.trainer_args()]
    local = REPO / "launchers" / "local.sh"
    if local.is_file():
        return ["bash", str(local), str(spec.processes), *spec.trainer_args()]
    return [
        "deepspeed",
        "--num_gpus",
        str(spec.processes),
        "--module",
        "megarecipe.cli.train",  # an installed copy
        *spec.trainer_args(),
    ]


@dataclass
class _Live:
    spec: RunSpec
    proc: subprocess.Popen | warm.WarmRun
    gpus: list[str]
    step_before: int
    started: float


class LocalPool:
    def __init__(self, parallel: int = 1, retries: int = 1, on_done=None):
        self.parallel, self.retries, self.on_done = parallel, retries, on_done
        self.free_gpus = visible_gpus()
        self.gpu_mode = bool(self.free_gpus)

    def _env(self, spec: RunSpec, gpus: list[str]) -> dict:
        env = dict(os.environ, MASTER_PORT=str(free_port()), PYTHONUNBUFFERED="1")
        if (REPO / "pyproject.toml").is_file():  # a checkout: its runs import this copy of the package
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        if self.gpu_mode:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        else:
            threads = str(threads_per_rank(self.parallel, spec.processes))
            env.update(OMP_NUM_THREADS=threads, MEGARECIPE_THREADS=threads, DS_ACCELERATOR="cpu")
        return env

    def _start(self, spec: RunSpec, attempt: int) -> _Live:
        gpus = []
        if self.gpu_mode:
            gpus, self.free_gpus = self.free_gpus[: spec.processes], self.free_gpus[spec.processes :]
        os.makedirs(spec.run_dir, exist_ok=True)
        log_path = os.path.join(spec.run_dir, LOG)
        cold = warm.cold_reason(gpus=self.free_gpus + gpus)
        cmd = command(spec) if cold else ["megarecipe.cli.train", *spec.trainer_args()]
        how = f"cold ({cold})" if cold else f"warm, {spec.processes} rank(s)"
        with open(log_path, "ab") as log:
            log.write(
                f"== launch attempt {attempt} at {time.strftime('%Y-%m-%d %H:%M:%S')}, {how}: "
                f"{shlex.join(cmd)}\n".encode()
            )
            log.flush()
            if not cold:
                proc = warm.start(
                    spec.trainer_args(), self._env(spec, gpus), os.getcwd(), log_path, processes=spec.processes
                )
                return _Live(spec, proc, gpus, progress_step(spec.run_dir), time.monotonic())
            # SIGINT ignored: a terminal's Ctrl-C, which reaches the whole process group, would end the trainer at
            # once and lose its steps since the last checkpoint; the tool sends it SIGTERM instead (it checkpoints)
            with _sigint_ignored():  # inherited through fork and exec (a preexec_fn is unsafe with threads)
                proc = subprocess.Popen(
                    cmd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=self._env(spec, gpus),
                    cwd=os.getcwd(),
                )
        return _Live(spec, proc, gpus, progress_step(spec.run_dir), time.monotonic())

    def _next(self, queue: list[RunSpec]) -> RunSpec | None:
        """The first queued run that fits the free GPUs and that no other process holds (another tool, or a
        trainer left running by a killed one: it is waited for, not started twice)."""
        for i, spec in enumerate(queue):
            if self.gpu_mode and len(self.free_gpus) < spec.processes:
                return None
            if not RunDir(spec.run_dir).locked():
                return queue.pop(i)
        return None

    def run(self, specs: list[RunSpec]) -> dict[str, RunResult]:
        """Start, watch and retry every spec; returns when all have ended. On an exception (Ctrl-C, SIGTERM
        turned into one by the caller) the live runs get SIGTERM - they checkpoint and stop - and are waited for."""
        if self.gpu_mode and any(s.processes > len(visible_gpus()) for s in specs):
            raise LaunchError(f"a run asks for more processes than the {len(visible_gpus())} GPUs here")
        queue = list(specs)
        counts = policy.tallies(s.run_dir for s in specs)
        live: list[_Live] = []
        results: dict[str, RunResult] = {}
        try:
            while queue or live:
                while len(live) < self.parallel:
                    spec = self._next(queue)
                    if spec is None:
                        break
                    c = counts[spec.run_dir]
                    if RunDir(spec.run_dir).state() == FINISHED:  # finished by the process we waited for
                        results[spec.run_dir] = result_of(spec, c.attempts, c.seconds, reused=True)
                        if self.on_done:
                            self.on_done(results[spec.run_dir])
                        continue
                    c.attempts += 1
                    live.append(self._start(spec, c.attempts))
                time.sleep(POLL_S)
                for item in [x for x in live if x.proc.poll() is not None]:
                    live.remove(item)
                    self.free_gpus += item.gpus
                    spec, c = item.spec, counts[item.spec.run_dir]
                    c.seconds += time.monotonic() - item.started
                    action = c.decide(item.step_before, self.retries)
                    if action in policy.AGAIN:
                        queue.insert(0, spec)
                    else:
                        if action == policy.GIVE_UP:
                            mark_failed(spec, f"exit code {item.proc.returncode}")
                        results[spec.run_dir] = result_of(spec, c.attempts, c.seconds)
                        if self.on_done:
                            self.on_done(results[spec.run_dir])
        finally:
            stop(live)
        return results


@contextmanager
def _sigint_ignored():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def stop(live: list[_Live], grace_s: float = 60.0) -> None:
    """SIGTERM to each live run (the trainer checkpoints and exits), then wait; SIGKILL what is left."""
    for item in live:
        if item.proc.poll() is None:
            item.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for item in live:
        try:
            item.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            item.proc.kill()
            item.proc.wait()
