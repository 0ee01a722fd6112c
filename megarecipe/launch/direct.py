"""One job of N ranks of a module (the trainer by default) in the foreground of a tool.

Warm (ranks forked from the preloaded forkserver, warm.py) when warm.cold_reason() allows it, else cold: the
trainer alone for one rank, the deepspeed launcher (or torchrun, for other modules) for more. Either way the ranks
write to the tool's own stdout and stderr: a warm rank receives the tool's descriptors 1 and 2 over the
forkserver's socket, so it shares them as an exec'd child would (a pipe, a file at its offset, a tty).
TERM, INT (passed on as TERM: the trainer checkpoints on TERM) and USR1 sent to the tool reach every rank; the
status is the job's, or 128+N after the job stopped on signal N, or was killed by it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile

from megarecipe.launch import warm
from megarecipe.launch.pool import threads_per_rank, visible_gpus
from megarecipe.system import free_port

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


def cold_command(args: list[str], processes: int = 1, module: str = warm.TRAINER, port: str | None = None) -> list[str]:
    """What a cold start runs: `python -m MODULE`, or a launcher of `processes` ranks."""
    if processes == 1:
        return [sys.executable, "-m", module, *args]
    port = port or os.environ.get("MASTER_PORT") or str(free_port())  # not a launcher's default: runs would collide
    if module != warm.TRAINER:
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(processes),
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            port,
            "-m",
            module,
            *args,
        ]
    deepspeed = os.path.join(os.path.dirname(sys.executable), "deepspeed")
    deepspeed = deepspeed if os.path.exists(deepspeed) else shutil.which("deepspeed") or "deepspeed"
    return [deepspeed, "--num_gpus", str(processes), "--master_port", port, "--module", module, *args]


def run(
    args: list[str],
    processes: int = 1,
    module: str = warm.TRAINER,
    env: dict | None = None,
    cwd: str | None = None,
    quiet_stop: bool = False,
) -> int:
    """Run the job to its end and return its exit status (see the module's doc)."""
    env = dict(os.environ if env is None else env)
    cwd = cwd or os.getcwd()
    job = _start_warm(args, processes, module, env, cwd) if warm.cold_reason(visible_gpus()) is None else None
    if job is None:
        job = _start_cold(args, processes, module, env, cwd)
    return _wait_forwarding(job, quiet_stop)


def captured(
    args: list[str], processes: int, env: dict, cwd: str, timeout: float, module: str = warm.TRAINER
) -> subprocess.CompletedProcess:
    """The job run to its end with its output captured (a tool that reports a job's result, not its log):
    warm when it may, else the cold command. Raises subprocess.TimeoutExpired, the job killed, after `timeout`."""
    cold = warm.cold_reason(visible_gpus()) is not None
    env = _job_env(env, processes, cold)
    if cold:
        return subprocess.run(
            cold_command(args, processes, module, env.get("MASTER_PORT")),
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    with tempfile.TemporaryDirectory() as tmp:
        out, err = os.path.join(tmp, "stdout"), os.path.join(tmp, "stderr")
        job = warm.start(args, env, cwd, out, err, processes=processes, module=module)
        try:
            code = job.wait(timeout)
        except subprocess.TimeoutExpired:
            job.kill()
            job.wait()
            raise
        text = [open(p, errors="replace").read() if os.path.exists(p) else "" for p in (out, err)]
    return subprocess.CompletedProcess(args, code, *text)


def _start_warm(args, processes, module, env, cwd) -> warm.WarmRun | None:
    if not (_usable(1) and _usable(2)):
        return None  # a closed stdout or stderr: a cold child would inherit it as it is
    sys.stdout.flush()
    sys.stderr.flush()
    return warm.start(args, _job_env(env, processes, cold=False), cwd, 1, 2, processes=processes, module=module)


def _job_env(env: dict, processes: int, cold: bool) -> dict:
    """The job's environment: each of several ranks gets its share of the cores (torch in each would take them
    all otherwise); a cold launcher's ranks one thread, as torchrun and deepspeed give them."""
    env = dict(env)
    if processes > 1:
        env.setdefault("OMP_NUM_THREADS", "1" if cold else str(threads_per_rank(1, processes)))
        if not cold:
            env.setdefault("MEGARECIPE_THREADS", env["OMP_NUM_THREADS"])
    return env


def _usable(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


class _ColdJob:
    """A cold job in a session of its own, so that a signal reaches the launcher and every rank below it."""

    def __init__(self, cmd: list[str], env: dict, cwd: str):
        self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, start_new_session=True)

    def send_signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def wait(self) -> int:
        return self.proc.wait()


def _start_cold(args, processes, module, env, cwd) -> _ColdJob:
    sys.stdout.flush()
    sys.stderr.flush()
    env = _job_env(env, processes, cold=True)
    return _ColdJob(cold_command(args, processes, module, env.get("MASTER_PORT")), env, cwd)


def _wait_forwarding(job, quiet_stop: bool) -> int:
    stops = []

    def forward(signum, frame):
        if signum != signal.SIGUSR1:
            stops.append(signum)
        job.send_signal(signal.SIGTERM if signum == signal.SIGINT else signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        code = job.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stops and code in (0, 128 + signal.SIGTERM, -signal.SIGTERM):  # it stopped with a checkpoint, as asked
        if not quiet_stop:
            print(
                f"stopped by {signal.Signals(stops[0]).name}; the same command with run.resume=true continues "
                f"from its checkpoint",
                file=sys.stderr,
            )
        return 128 + stops[0]
    return 128 - code if code < 0 else code  # killed by signal N: the shell's 128 + N
