"""What one run is (RunSpec), how it ended (RunResult), and the checks both backends make before starting it."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field

from megarecipe import errors, rundir
from megarecipe.rundir import RunDir

LOG = "train.log"  # RUN/train.log: every attempt's stdout and stderr, appended
TAIL_LINES = 20
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


class LaunchError(errors.UserError):
    """A run that cannot be started as asked; the message is one line naming the run and the fix."""


@dataclass
class RunSpec:
    config: str  # YAML path or preset name
    overrides: list[str] = field(default_factory=list)  # key=value; the launcher adds run.dir and run.resume=true
    run_dir: str = ""
    processes: int = 1  # ranks of this run

    @property
    def name(self) -> str:
        return os.path.basename(os.path.normpath(self.run_dir))

    def trainer_args(self) -> list[str]:
        """CONFIG key=value ... as the trainer takes them: every start resumes, so a restart never retrains."""
        from megarecipe.config import override

        return [self.config, *self.overrides, override("run.dir", self.run_dir), "run.resume=true"]


@dataclass
class RunResult:
    name: str
    run_dir: str
    state: str  # rundir's states: finished, failed, stopped, ...
    val_loss: float | None = None  # final val/loss, exact, from run.json
    seconds: float = 0.0  # wall time of this call's attempts (0 when read back finished)
    attempts: int = 0  # trainer starts made by this call
    reused: bool = False  # finished before this call: read, not trained
    log_tail: str = ""  # the last lines of RUN/train.log when it did not finish
    error: str | None = None


def safe_name(text: str) -> str:
    """A file name from free text: runs of other characters become '-'."""
    name = _UNSAFE.sub("-", text).strip("-.")
    if not name:
        raise LaunchError(f"run name {text!r} has no usable characters; use letters, digits, '.', '_' or '-'")
    return name


def number(v: float) -> str:
    """A short exact spelling for names: 0.003 -> 3e-3, 0.01 -> 1e-2, 0.8 -> 0.8, 16 -> 16."""
    if v == 0 or (0.1 <= abs(v) < 1e4):
        return f"{v:g}"
    mantissa, exp = f"{v:e}".split("e")
    return f"{float(mantissa):g}e{int(exp)}"


def settings_of(spec: RunSpec, cuda: bool | None = None) -> tuple[str, dict]:
    """The run's settings_sha256 and facts it will state, from its config; bad settings raise LaunchError.
    Nothing is built: this is the trainer's own config check, run before any process starts (cuda: the
    training machines have CUDA; None: they are this one)."""
    from megarecipe.config import ConfigError, load_config, settings_sha256
    from megarecipe.preflight import check_run

    if spec.processes < 1:
        raise LaunchError(f"{spec.name}: processes={spec.processes} must be >= 1")
    try:
        cfg = load_config(spec.config, spec.trainer_args()[1:])
        check_run(cfg, world_size=spec.processes, cuda=cuda)
    except ConfigError as e:
        raise LaunchError(f"{spec.name}: {e}") from None
    return settings_sha256(cfg), {
        "lr": cfg.optim.lr,
        "weight_decay": cfg.optim.weight_decay,
        "epochs": cfg.train.epochs,
        "seed": cfg.run.seed,
    }


def check_reuse(spec: RunSpec, sha: str, retry_failed: bool = False) -> RunResult | None:
    """A finished run with these exact settings is read, not trained again, and so is a failed one unless
    retry_failed; a run dir that holds another run is refused."""
    run = RunDir(spec.run_dir)
    info = run.info() or {}
    have = info.get("settings_sha256")
    if have and have != sha:
        raise LaunchError(
            f"{spec.run_dir} holds a run with other settings (settings_sha256 {have[:12]} != "
            f"{sha[:12]}); move it aside or write the sweep to another directory"
        )
    st = run.state()
    if st == rundir.FINISHED or (st == rundir.FAILED and not retry_failed):
        return result_of(spec, attempts=0, seconds=0.0, reused=True)
    return None


def result_of(spec: RunSpec, attempts: int, seconds: float, reused: bool = False) -> RunResult:
    run = RunDir(spec.run_dir)
    info = run.info() or {}
    st = run.state()
    loss = (info.get("final") or {}).get("val_loss")
    if loss is not None and not math.isfinite(loss):
        loss = None
    done = st == rundir.FINISHED
    return RunResult(
        name=spec.name,
        run_dir=spec.run_dir,
        state=st,
        val_loss=loss if done else None,
        seconds=seconds,
        attempts=attempts,
        reused=reused,
        log_tail="" if done else log_tail(spec.run_dir),
        error=None if done else info.get("error"),
    )


def log_tail(run_dir: str, lines: int = TAIL_LINES) -> str:
    try:
        with open(os.path.join(run_dir, LOG), "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def mark_failed(spec: RunSpec, why: str) -> None:
    """Record in run.json that the launcher gave up on the run (unless a process still holds it)."""
    run = RunDir(spec.run_dir)
    if run.locked():
        return
    tail = log_tail(spec.run_dir, 5).splitlines()
    run.update(status=rundir.FAILED, error=(run.info() or {}).get("error") or why, log_tail=tail)


def progress_step(run_dir: str) -> int:
    return int((RunDir(run_dir).info() or {}).get("step") or 0)
