"""The run directory: its file names, its TensorBoard tags and its run.json, owned here and nowhere else.

RUN/run.json          what the run is and where it stands: status, exact facts, config hash, export, final loss
RUN/config.yaml       the resolved config the run started with
RUN/tb/               TensorBoard events: the curves and the HPARAMS view
RUN/checkpoints/      DeepSpeed checkpoints, one step<8 digits>/ per tag, and the `latest` pointer
RUN/export/           consolidated weights, loadable without DeepSpeed: model.safetensors, config.yaml, model.json
RUN/eval/             downstream evaluation results
RUN/run.lock          locked by the process that writes the run, for as long as it runs
RUN/memory.json       model-state bytes each rank held (parameters, gradients, optimizer), for the ZeRO planner

Writers (the trainer, the ensemble scorer) and readers (analysis, launchers, recipes) all go through this
module; it imports nothing heavy, so every layer may use it.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from contextlib import contextmanager

from megarecipe import atomic, errors

RUN_JSON, CONFIG, TB, CHECKPOINTS, EXPORT, EVAL, LOCK, MEMORY = (
    "run.json",
    "config.yaml",
    "tb",
    "checkpoints",
    "export",
    "eval",
    "run.lock",
    "memory.json",
)

# RUN/checkpoints/: a tag per saved step, and the pointer to the newest complete one
POINTER = "latest"
TAG = re.compile(r"step(\d{8})")

# RUN/export/: what megarecipe/model/export.py writes and every loader checks for
WEIGHTS, MODEL_JSON = "model.safetensors", "model.json"
EXPORT_FILES = (WEIGHTS, CONFIG, MODEL_JSON)


def tag_for(step: int) -> str:
    return f"step{step:08d}"


def tag_step(tag: str) -> int | None:
    """The step a checkpoint tag names; None when `tag` is not one."""
    found = TAG.fullmatch(tag)
    return int(found.group(1)) if found else None


# TensorBoard tags
TRAIN_LOSS = "train/loss"
VAL_LOSS = "val/loss"  # exact mean over the data dir's held-out tokens
ENSEMBLE_VAL_LOSS = "ensemble/val_loss"  # step = K, the number of members whose logits are averaged
LR = "train/lr"
GRAD_NORM = "train/grad_norm"
EPOCH = "train/epoch"
SKIPPED = "train/skipped_batches"
TOKENS_PER_SEC = "perf/tokens_per_sec"
MFU = "perf/mfu"  # per device: global model FLOPs/s / (world size x peak)
STEP_TIME = "perf/step_time_s"
MEMORY_GIB = "perf/memory_gib"  # CUDA max allocated, or the resident set on CPU, of rank 0
TOKENS = "train/tokens"  # training tokens consumed by the end of the step
CONFIG_TEXT = "run/config"


def fact_tag(name: str) -> str:
    """The run's facts are also TensorBoard scalars at step 0 (float32: run.json holds the exact values)."""
    return f"run/{name}"


def eval_tag(task: str, metric: str) -> str:
    return f"eval/{task}/{metric}"


# The facts every run states, exact, in run.json["facts"].
FACTS = (
    "params",
    "params_non_embedding",
    "train_tokens",
    "epochs",
    "lr",
    "weight_decay",
    "seed",
    "global_batch_tokens",
    "total_steps",
    "world_size",
)

# run.json "status", and the two states a reader can see beyond it
RUNNING, FINISHED, STOPPED, FAILED = "running", "finished", "stopped", "failed"
NOT_STARTED = "not started"
INTERRUPTED = "interrupted"  # run.json says running, but no process holds the lock: killed


class RunDirError(errors.UserError):
    """A run directory that cannot be used as it is; the message says why and what to do, in one line."""


def enclosing_run(path: str) -> str | None:
    """The training run dir that `path` lies inside (its export/, checkpoints/, tb/, ...), by real path; None when
    there is none. An ensemble dir's members lie inside it by design and are not refused."""
    here = os.path.realpath(path)
    parent = os.path.dirname(here)
    while parent != here:
        info = atomic.read_json(os.path.join(parent, RUN_JSON))
        if info and info.get("kind", "train") == "train":
            return parent
        here, parent = parent, os.path.dirname(parent)
    return None


class RunDir:
    def __init__(self, path: str):
        self.path = os.path.normpath(str(path))

    def __repr__(self) -> str:
        return f"RunDir({self.path!r})"

    def join(self, *names: str) -> str:
        return os.path.join(self.path, *names)

    @property
    def run_json(self) -> str:
        return self.join(RUN_JSON)

    @property
    def config(self) -> str:
        return self.join(CONFIG)

    @property
    def tb(self) -> str:
        return self.join(TB)

    @property
    def checkpoints(self) -> str:
        return self.join(CHECKPOINTS)

    @property
    def export(self) -> str:
        return self.join(EXPORT)

    @property
    def eval(self) -> str:
        return self.join(EVAL)

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    # run.json ---------------------------------------------------------------------------------------------

    def info(self) -> dict | None:
        """run.json as a dict; None when the run has none (not started, or written by an older version)."""
        try:
            with open(self.run_json) as f:
                info = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise RunDirError(
                f"{self.run_json} is unreadable ({e}); move it aside to read the run from its events"
            ) from None
        if not isinstance(info, dict):
            raise RunDirError(f"{self.run_json} does not hold a JSON object; move it aside")
        final = info.get("final")
        wrong = [
            name
            for name, value, kinds in (
                ("status", info.get("status"), str),
                ("kind", info.get("kind"), str),
                ("step", info.get("step"), int),
                ("settings_sha256", info.get("settings_sha256"), str),
                ("final", final, dict),
                ("final.val_loss", (final or {}).get("val_loss") if isinstance(final, dict) else None, (int, float)),
                ("final.step", (final or {}).get("step") if isinstance(final, dict) else None, int),
            )
            if value is not None and (not isinstance(value, kinds) or isinstance(value, bool))
        ]
        if wrong:
            raise RunDirError(
                f"{self.run_json}: {wrong[0]} has the wrong type; move run.json aside to read the run from its events"
            )
        return info

    def update(self, **fields) -> dict:
        """Merge `fields` into run.json and write it atomically (one writer per run: rank 0)."""
        info = self.info() or {}
        info.update(fields, updated=time.time())
        os.makedirs(self.path, exist_ok=True)
        atomic.write_json(self.run_json, info)
        return info

    def check_kind(self, kind: str) -> None:
        """Refuse to write a run of `kind` into a directory that holds another kind of run (a training run's
        run.json, checkpoints or export), whose events and final loss it would replace."""
        have = (self.info() or {}).get("kind")
        if have is None and (os.path.isdir(self.checkpoints) or os.path.isdir(self.export)):
            have = "train"
        if have not in (None, kind):
            raise RunDirError(
                f"{self.path} holds a {have} run (its run.json, checkpoints or export); write the "
                f"{kind} to a directory of its own"
            )

    def state(self) -> str:
        """not started / running / interrupted / stopped / finished / failed, from the directory alone."""
        if self.locked():  # a resumed run holds the lock before it updates run.json
            return RUNNING
        info = self.info()
        if info is None:
            return NOT_STARTED if not os.path.isdir(self.checkpoints) else INTERRUPTED
        status = info.get("status", NOT_STARTED)
        return INTERRUPTED if status == RUNNING else status

    def _unusable(self, e: OSError) -> RunDirError:
        return RunDirError(f"run.dir {self.path[:200]!r} cannot be used ({e.strerror}); choose another run.dir")

    # the lock -----------------------------------------------------------------------------------------------

    def locked(self) -> bool:
        """Whether some process holds the run's lock now."""
        try:
            fd = os.open(self.join(LOCK), os.O_RDONLY)
        except FileNotFoundError:
            return False
        except OSError as e:
            raise self._unusable(e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    @contextmanager
    def hold(self):
        """Hold the run's lock while the block runs; another holder makes this a one-line error."""
        try:
            os.makedirs(self.path, exist_ok=True)
            fd = os.open(self.join(LOCK), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise self._unusable(e) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunDirError(
                    f"{self.path} is in use by another process (it holds {LOCK}); wait for it to "
                    f"finish or stop it, or choose another run.dir"
                ) from None
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.uname().nodename} {os.getpid()}\n".encode())
            yield self
        finally:
            os.close(fd)
