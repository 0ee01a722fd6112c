"""Warm starts: the trainer's imports paid once, not once per run.

A multiprocessing forkserver imports torch, DeepSpeed, megatron-core and the trainer once (`preload`); each run,
and each rank of a multi-rank run, is then a fresh process forked from it that behaves as
`python -m megarecipe.cli.train ARGS` would: its own environment, working directory, log file, signals
(SIGINT ignored, SIGTERM/SIGUSR1 checkpoint), exit status and atexit handlers. Nothing is shared between runs
but the imported code.

Cold starts (a new interpreter per run) remain where forking is unsafe or unwanted: on a machine with GPUs
(a CUDA context must not exist before a fork, and a child may not create one from a parent's state),
with MEGARECIPE_WARM=0, or when MEGARECIPE_TRAINER replaces the trainer.

A warm run stops with its launcher: each child asks the kernel for SIGTERM when its parent (the forkserver)
exits, and the forkserver exits when the process that started it is gone, even on kill -9.
"""

from __future__ import annotations

import atexit
import importlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from multiprocessing import forkserver, reduction

from megarecipe.system import die_with_parent, free_port

TRAINER = "megarecipe.cli.train"  # as `python -m megarecipe.cli.train`: named, not imported, by this layer
# What the server imports once. Names, not import statements: this process never loads the training stack.
# Beyond the top-level packages, what a run imports on its way to the first step (measured: sys.modules of a
# forked run after it ended, against the server's), so that no run pays for it again.
PRELOAD = [
    "megarecipe.launch.server_env",
    "torch",
    "deepspeed",
    "megatron.core.models.gpt",
    "megatron.core.models.gpt.gpt_layer_specs",
    "megatron.core.transformer.attention",
    "deepspeed.runtime.zero.muon",
    "deepspeed.module_inject.auto_ep_layer",
    "deepspeed.moe.ep_experts",
    "torch.utils.tensorboard",
    "tensorboard.plugins.hparams.api_pb2",
    "tensorboard.plugins.hparams.metadata",
    "numpy.ma",
    "megarecipe.parallel.cpu_compat",
    "megarecipe.parallel.memory",
    "megarecipe.train.metrics",
    "megarecipe.model.llama",
    "megarecipe.parallel.engine",
    "megarecipe.parallel.distributed",
    "megarecipe.distill.teacher",
    "megarecipe.train.step",
    "megarecipe.train.validation",
    "megarecipe.train.console",
    "megarecipe.train.loop",
    "megarecipe.train.checkpoint",
    TRAINER,
]
PEER_GRACE_S = 30.0  # as DeepSpeed's launcher: when a rank fails, the others get SIGTERM, then SIGKILL


def cold_reason(gpus: list[str]) -> str | None:
    """Why this run starts cold (a new interpreter), or None when it may start warm."""
    if os.environ.get("MEGARECIPE_WARM", "1") == "0":
        return "MEGARECIPE_WARM=0"
    if os.environ.get("MEGARECIPE_TRAINER"):
        return "MEGARECIPE_TRAINER replaces the trainer"
    if sys.platform != "linux":
        return "warm starts need Linux"
    if gpus:
        return "GPUs are visible: forking a process that may hold CUDA state is unsafe"
    return None


def _context():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    if not _stopping:
        atexit.register(_stop_server)
        _stopping.append(True)
    return ctx


_stopping: list = []


def _stop_server() -> None:
    """Stop the forkserver and wait for it at exit, so that its CPU time and its runs' reach the caller's
    accounting (time, /usr/bin/time, a Slurm job's) instead of an orphan's."""
    stop = getattr(forkserver._forkserver, "_stop", None)  # CPython's own (used by its tests)
    if stop is not None:
        try:
            stop()
        except (OSError, ChildProcessError):
            pass


class WarmRun:
    """The ranks of one run forked from the forkserver; used like a subprocess.Popen of its launcher."""

    def __init__(self, processes: list):
        self._procs = processes
        self.pids = [p.pid for p in processes]  # kept: the process objects are closed once they are reaped
        self.pid = self.pids[0]
        self._failed_at: float | None = None
        self._first_failure: int | None = None  # the job's status: not that of a peer stopped because of it
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        codes = [p.exitcode for p in self._procs]
        failed = [c for c in codes if c not in (None, 0)]
        if failed and None in codes:  # a rank failed: the others are stopped, as DeepSpeed's launcher does
            if self._failed_at is None:
                self._failed_at = time.monotonic()
                self._first_failure = failed[0]
                self.send_signal(signal.SIGTERM)
            elif time.monotonic() - self._failed_at > PEER_GRACE_S:
                self.kill()
            return None
        if None in codes:
            return None
        # the status first: a signal handler (the tool's forwarding) or a Ctrl-C may land while they are closed,
        # and a closed process object raises on exitcode; with the status set, send_signal and poll leave them be
        self.returncode = self._first_failure if self._first_failure is not None else (failed[0] if failed else 0)
        for p in self._procs:
            p.join()
            p.close()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("warm run", timeout)
            live = [p.sentinel for p in self._procs if p.exitcode is None]
            left = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
            multiprocessing.connection.wait(live, timeout=left)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is not None:
            return  # reaped, as Popen.send_signal after wait()
        for p in self._procs:
            if p.exitcode is None:
                try:
                    os.kill(p.pid, sig)
                except ProcessLookupError:
                    pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def start(
    args: list[str],
    env: dict,
    cwd: str,
    stdout: str | int,
    stderr: str | int | None = None,
    processes: int = 1,
    module: str = TRAINER,
) -> WarmRun:
    """Fork `processes` ranks of `python -m MODULE ARGS` (the trainer, or another program of the training stack
    whose main(argv) returns the exit status); their output is appended to stdout (and stderr, or stdout when
    None): a path, or a descriptor of this process that the ranks then share, as exec'd children would.
    A multi-rank run gets the environment a launcher gives its ranks."""
    ctx = _context()
    port = env.get("MASTER_PORT") or str(free_port())
    procs = []
    for rank in range(processes):
        rank_env = dict(env)
        if processes > 1 or "WORLD_SIZE" not in env:
            rank_env.update(
                RANK=str(rank),
                LOCAL_RANK=str(rank),
                WORLD_SIZE=str(processes),
                LOCAL_WORLD_SIZE=str(processes),
                MASTER_ADDR=env.get("MASTER_ADDR", "127.0.0.1"),
                MASTER_PORT=port,
            )
        outputs = [_Fd(o) if isinstance(o, int) else o for o in (stdout, stdout if stderr is None else stderr)]
        proc = ctx.Process(
            target=_rank,
            args=(module, list(args), rank_env, cwd, *outputs),
            name=f"megarecipe-train-{rank}",
            daemon=False,
        )
        with _main_hidden():
            proc.start()
        procs.append(proc)
    return WarmRun(procs)


@contextmanager
def _main_hidden():
    """multiprocessing re-imports the caller's __main__ in the forkserver and in every child, so that pickled
    functions of __main__ resolve; the target here lives in this module, and re-running a tool's script (its
    imports, or worse its code when it has no __main__ guard) in each run would cost what warm starts save."""
    main = sys.modules["__main__"]
    saved = {k: main.__dict__[k] for k in ("__spec__", "__file__") if k in main.__dict__}
    main.__spec__ = None
    main.__dict__.pop("__file__", None)
    try:
        yield
    finally:
        main.__dict__.update(saved)


def _die_with_parent() -> None:
    """SIGTERM to this rank when the forkserver exits, which it does when the tool that started it is gone. A
    forked child holds the server's "alive" pipe as every client does, which would keep the server up for as
    long as the rank runs: a rank starts no processes through the server, so it lets go of it."""
    alive = getattr(forkserver._forkserver, "_forkserver_alive_fd", None)
    if alive is not None:
        os.close(alive)
        forkserver._forkserver._forkserver_alive_fd = None
    die_with_parent()


class _Fd:
    """A descriptor of the caller's, sent to the forkserver with the run (SCM_RIGHTS) when the run is pickled."""

    def __init__(self, fd: int):
        self.fd = fd

    def __reduce__(self):

        return _received, (reduction.DupFd(self.fd),)


def _received(dup) -> _Fd:
    return _Fd(dup.detach())


def _redirect(path: str | _Fd, fd: int) -> None:
    if isinstance(path, _Fd):
        os.dup2(path.fd, fd)
        if path.fd > 2:
            os.close(path.fd)
        return
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    os.dup2(target, fd)
    os.close(target)


def _rank(module: str, args: list[str], env: dict, cwd: str, stdout: str | _Fd, stderr: str | _Fd) -> None:
    """One rank, in the forked child: become `python -m MODULE ARGS` and exit as it would."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as the pool's cold runs: the tool turns Ctrl-C into SIGTERM
    _die_with_parent()
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.stdout.flush()
    sys.stderr.flush()
    _redirect(stdout, 1)
    _redirect(stderr, 2)
    sys.stdout.reconfigure(line_buffering=True, write_through=True)
    sys.stderr.reconfigure(line_buffering=True, write_through=True)
    program = importlib.import_module(module)
    sys.argv = [program.__file__, *args]
    try:
        code = program.main(args)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    atexit._run_exitfuncs()  # what the interpreter would run on exit: logging's flush, writers' close
    sys.exit(code)
