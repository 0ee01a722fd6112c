"""Checkpoints: DeepSpeed's files per tag, the trainer's own state per rank, a manifest, and a pointer that
moves only after every rank finished writing.

RUN/checkpoints/step00000120/   DeepSpeed's model and optimizer shards; trainer_rank{r}.pt (step, RNG, resume
                                key; tensors and plain types, loaded with weights_only=True); manifest.json
                                (every file and its size, written last)
RUN/checkpoints/latest          the tag of the newest complete checkpoint (replaced atomically)
RUN/checkpoints/abandoned/      step dirs newer than the tag a run resumed from (`run.resume_from` an older
                                tag), moved here whole when that resume succeeds: a branch the user left

A crash while step N is written leaves `latest` naming the previous, complete checkpoint. A pointer that is
empty or names a missing tag, a missing file, a truncated or corrupt one: each is an error naming the tag, the
file and the older complete checkpoint to resume from (`run.resume_from=TAG`) - never a silent restart.
DeepSpeed's own files are pickles: a checkpoint is trusted input (exports are safetensors, safe to share).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
import zipfile

import numpy as np
import torch
import torch.distributed as dist

from megarecipe import atomic, errors
from megarecipe.rank_errors import agreed
from megarecipe.rundir import POINTER, TAG, tag_for  # noqa: F401  (the run dir names tags; re-exported)

MANIFEST = "manifest.json"
ABANDONED = "abandoned"  # not a tag: scans (tags, newest_complete, pruning) never see what is in it
UNIVERSAL = ".universal"  # TAG.universal/: the tag converted for another layout (universal.py); goes with its tag
_WRITE_FAILED = ("inline_container", "iostream error", "file write failed", "PytorchStreamWriter")  # torch.save's


class CheckpointError(errors.RunError):
    """A checkpoint that cannot be resumed as asked; one line naming the tag, the file and what to do."""


def tags(ckpt_dir: str) -> list[str]:
    """The step directories present, oldest first (complete or not)."""
    if not os.path.isdir(ckpt_dir):
        return []
    return sorted(t for t in os.listdir(ckpt_dir) if TAG.fullmatch(t) and os.path.isdir(os.path.join(ckpt_dir, t)))


def exists(ckpt_dir: str) -> bool:
    """Any pointer or step directory means the run has checkpointed, whatever state they are in."""
    return os.path.exists(os.path.join(ckpt_dir, POINTER)) or bool(tags(ckpt_dir))


def resume_tag(ckpt_dir: str, resume_from: str | None = None) -> str | None:
    """The tag to resume from: `resume_from` when given, else the one `latest` names; None when the run has
    no checkpoint at all."""
    if resume_from:
        if not os.path.isdir(os.path.join(ckpt_dir, resume_from)):
            raise CheckpointError(
                f"run.resume_from={resume_from!r}: no such checkpoint in {ckpt_dir} ({_present(ckpt_dir)})"
            )
        return resume_from
    if not exists(ckpt_dir):
        return None
    path = os.path.join(ckpt_dir, POINTER)
    tag = _read_pointer(path)
    if tag and TAG.fullmatch(tag) and os.path.isdir(os.path.join(ckpt_dir, tag)):
        return tag
    if tag is None:
        what = "is not a file" if os.path.exists(path) else "is missing"
    elif not tag:
        what = "is empty"
    elif not TAG.fullmatch(tag):  # only a tag of this run: a path would resume another run's checkpoint
        what = f"names {tag[:80]!r}, which is not a checkpoint tag (stepNNNNNNNN)"
    else:
        what = f"names {tag!r}, which is not there"
    raise CheckpointError(f"{path} {what} ({_present(ckpt_dir)}){_advice(ckpt_dir, None)}")


def _read_pointer(path: str) -> str | None:
    """The pointer's text, stripped (undecodable bytes kept visible); None when it is not a readable file."""
    try:
        with open(path, "rb") as f:
            return f.read(4096).decode("utf-8", errors="backslashreplace").strip()
    except OSError:
        return None


def _present(ckpt_dir: str) -> str:
    found = tags(ckpt_dir)
    return "checkpoints present: " + ", ".join(found) if found else "no step directories"


def _advice(ckpt_dir: str, bad: str | None) -> str:
    older = newest_complete(ckpt_dir, before=bad)
    if older:
        return f"; resume from the newest complete one with run.resume_from={older}, or move the damaged one aside"
    return "; no complete checkpoint remains: start a new run.dir"


def newest_complete(ckpt_dir: str, before: str | None = None) -> str | None:
    """The newest tag (older than `before`) whose manifest lists files that are all there at their size."""
    for tag in reversed(tags(ckpt_dir)):
        if (before is None or tag < before) and not _manifest_problem(ckpt_dir, tag):
            return tag
    return None


def set_aside_newer(ckpt_dir: str, tag: str) -> tuple[str, list[str]] | None:
    """The run continues from `tag`: every newer step dir (a branch the user discarded by resuming from an older
    tag, or a save a crash cut short) moves whole, by rename, to abandoned/<time>-resumed-<tag>/, and `latest`
    names `tag` first, so a crash at any point leaves a resume that follows the continued branch. That holds when
    nothing is newer too: `latest` may name an older tag (a set-aside killed between its pointer and its renames,
    then a resume from the newest tag). Nothing is deleted. Returns (the folder, the tags moved), or None when no
    step dir is newer."""
    pointer = os.path.join(ckpt_dir, POINTER)
    if _read_pointer(pointer) != tag:
        atomic.write_text(pointer, tag)
    newer = [t for t in tags(ckpt_dir) if t > tag]
    if not newer:
        return None
    stamp, n = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()), 1
    while True:
        aside = os.path.join(ckpt_dir, ABANDONED, f"{stamp}-resumed-{tag}" + (f"-{n}" if n > 1 else ""))
        try:
            os.makedirs(aside)
            break
        except FileExistsError:
            n += 1
    for old in newer:
        os.rename(os.path.join(ckpt_dir, old), os.path.join(aside, old))
        if os.path.isdir(os.path.join(ckpt_dir, old + UNIVERSAL)):
            os.rename(os.path.join(ckpt_dir, old + UNIVERSAL), os.path.join(aside, old + UNIVERSAL))
    return aside, newer


# ----------------------------------------------------------------------------------------------------------
# Checking a tag before loading it


def incomplete(ckpt_dir: str, tag: str) -> str | None:
    """Why the tag is not a complete checkpoint (never finished, a file missing or cut short); None if it is."""
    return _manifest_problem(ckpt_dir, tag)


def _manifest_problem(ckpt_dir: str, tag: str) -> str | None:

    path = os.path.join(ckpt_dir, tag, MANIFEST)
    try:
        with open(path) as f:
            files = json.load(f)["files"]
    except FileNotFoundError:
        return f"{tag}/{MANIFEST} is missing (the checkpoint was never completed)"
    except (OSError, ValueError, KeyError, TypeError):
        return f"{tag}/{MANIFEST} is unreadable"
    for name, size in sorted(files.items()):
        full = os.path.join(ckpt_dir, tag, name)
        if not os.path.isfile(full):
            return f"{tag}/{name} is missing"
        if os.path.getsize(full) != size:
            return f"{tag}/{name} has {os.path.getsize(full)} bytes, {size} were written"
    return None


def _file_problem(ckpt_dir: str, tag: str, name: str) -> str | None:
    """torch's files are zip archives with a CRC per entry: truncation and corruption both show."""
    try:
        with zipfile.ZipFile(os.path.join(ckpt_dir, tag, name)) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        return f"{tag}/{name} is damaged ({e})"
    return f"{tag}/{name} is damaged (entry {bad} fails its CRC)" if bad else None


def check(ckpt_dir: str, tag: str, world_size: int) -> None:
    """Every rank checks its share of the tag's files; all agree, and all raise the same one-line error."""
    rank, size = dist.get_rank(), dist.get_world_size()
    problem = _manifest_problem(ckpt_dir, tag) if rank == 0 else None
    if problem is None and rank == 0:
        missing = [
            r for r in range(world_size) if not os.path.isfile(os.path.join(ckpt_dir, tag, f"trainer_rank{r}.pt"))
        ]
        if missing:
            problem = f"{tag}/trainer_rank{missing[0]}.pt is missing (every rank's file is required)"
    if problem is None:
        files = sorted(n for n in os.listdir(os.path.join(ckpt_dir, tag)) if n.endswith(".pt"))
        for name in files[rank::size]:
            problem = _file_problem(ckpt_dir, tag, name)
            if problem:
                break
    found = [None] * size
    dist.all_gather_object(found, problem)
    first = next((p for p in found if p), None)
    if first:
        raise agreed(
            CheckpointError(f"cannot resume from {os.path.join(ckpt_dir, tag)}: {first}{_advice(ckpt_dir, tag)}")
        )


# ----------------------------------------------------------------------------------------------------------
# The trainer's own state per rank: plain types and tensors only


def _rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _trainer_file(ckpt_dir: str, tag: str, rank: int) -> str:
    return os.path.join(ckpt_dir, tag, f"trainer_rank{rank}.pt")


def _load_trainer_file(ckpt_dir: str, tag: str, rank: int) -> dict:
    path = _trainer_file(ckpt_dir, tag, rank)
    if not os.path.isfile(path):
        raise CheckpointError(
            f"cannot resume from {os.path.join(ckpt_dir, tag)}: trainer_rank{rank}.pt is missing "
            f"(every rank's file is required){_advice(ckpt_dir, tag)}"
        )
    where = os.path.join(ckpt_dir, tag)
    older = CheckpointError(
        f"cannot resume from {where}: an older megarecipe wrote it (no {MANIFEST}, "
        f"trainer_rank{rank}.pt holds pickled numpy state), and this version resumes only "
        f"checkpoints it wrote; finish the run with the version that started it, or start a new "
        f"run.dir"
    )
    try:
        state = torch.load(path, weights_only=True)
    except Exception as e:  # a damaged zip, or a file from an older version that pickled numpy objects
        if not os.path.isfile(os.path.join(where, MANIFEST)) and "Weights only load failed" in str(e):
            raise older from None
        first = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).splitlines()[0][:120] if str(e) else type(e).__name__
        raise CheckpointError(
            f"cannot resume from {where}: trainer_rank{rank}.pt is unreadable ({first}){_advice(ckpt_dir, tag)}"
        ) from None
    # importing megatron.core allows numpy arrays under weights_only, so an older file may load: its numpy RNG
    # state is then numpy's tuple, not our dict
    if isinstance(state, dict) and not isinstance((state.get("rng") or {}).get("numpy", {}), dict):
        raise older
    rng = state.get("rng") if isinstance(state, dict) else None
    if not (isinstance(rng, dict) and {"torch", "numpy", "python"} <= set(rng) and "resume_key" in state):
        raise CheckpointError(
            f"cannot resume from {where}: trainer_rank{rank}.pt loads but lacks the RNG state or "
            f"the resume key this version writes{_advice(ckpt_dir, tag)}"
        )
    return state


def saved_resume_key(ckpt_dir: str, tag: str) -> dict:
    """What the run was checkpointed with (layout, seed, batch, budget, optimizer), from rank 0's file."""
    return _load_trainer_file(ckpt_dir, tag, 0)["resume_key"]


# ----------------------------------------------------------------------------------------------------------


class Checkpointer:
    """Saves at its cadence (every `every` steps, the last step, and when the run is asked to stop) and
    restores a tag with every rank's state."""

    def __init__(self, engine, ckpt_dir: str, every: int, keep: int, resume_key: dict):
        self.engine, self.dir, self.every, self.keep, self.resume_key = engine, ckpt_dir, every, keep, resume_key

    def due(self, step: int, end: int, stopping: bool) -> bool:
        return step == end or stopping or bool(self.every and step % self.every == 0)

    def save(self, step: int) -> str:
        """Every rank calls this; returns the tag written."""
        tag = tag_for(step)
        rank = dist.get_rank()
        stale = os.path.join(self.dir, tag, MANIFEST)
        if rank == 0 and os.path.exists(stale):  # a step dir written again (after run.resume_from an older
            os.remove(stale)  # tag) reads as incomplete until its new manifest is there
        if rank == 0:  # and a conversion of what it held before is not this one's
            shutil.rmtree(os.path.join(self.dir, tag + UNIVERSAL), ignore_errors=True)
        dist.barrier()
        try:
            self.engine.save_checkpoint(self.dir, tag=tag, client_state={"step": step}, save_latest=False)
            torch.save(
                {"step": step, "rng": _rng_state(), "resume_key": self.resume_key}, _trainer_file(self.dir, tag, rank)
            )
        except (OSError, RuntimeError) as e:
            if not isinstance(e, OSError) and not any(w in str(e) for w in _WRITE_FAILED):
                raise
            raise self._write_failed(tag, e) from None
        dist.barrier()
        if rank == 0:
            folder = os.path.join(self.dir, tag)
            files = {n: os.path.getsize(os.path.join(folder, n)) for n in sorted(os.listdir(folder)) if n != MANIFEST}
            atomic.write_json(os.path.join(folder, MANIFEST), {"step": step, "files": files})
            atomic.write_text(os.path.join(self.dir, POINTER), tag)
            self._prune(tag)
        dist.barrier()
        return tag

    def _write_failed(self, tag: str, e: Exception) -> CheckpointError:
        """A full disk (or a write error) mid-save: the partial step dir goes, so `latest` and the space it
        took are as before the save."""
        free = shutil.disk_usage(self.dir).free / 2**20 if os.path.isdir(self.dir) else 0.0
        before = _read_pointer(os.path.join(self.dir, POINTER))
        if before != tag:
            shutil.rmtree(os.path.join(self.dir, tag), ignore_errors=True)
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0][:100]
        kept = f"the last complete one, {before}, is intact" if before else "there is no earlier one"
        return CheckpointError(
            f"checkpoint {tag} could not be written to {self.dir} ({why}; {free:.1f} MiB were "
            f"free), and its partial files are removed; {kept}: free space and run again with "
            f"run.resume=true"
        )

    def _prune(self, newest: str) -> None:
        for old in [t for t in tags(self.dir) if t <= newest][: -self.keep]:
            shutil.rmtree(os.path.join(self.dir, old + UNIVERSAL), ignore_errors=True)
            shutil.rmtree(os.path.join(self.dir, old), ignore_errors=True)

    def restore(self, tag: str, world_size: int, universal: bool = False) -> int:
        """Check the tag on every rank, then load it; returns its step. world_size: the one that wrote it.
        universal: load TAG.universal/ (the engine is built with checkpoint.load_universal), on another layout;
        a rank that the writing layout did not have keeps its freshly seeded RNG."""
        check(self.dir, tag, world_size)
        rank = dist.get_rank()
        own = _load_trainer_file(self.dir, tag, rank if rank < world_size else 0)
        try:
            _, client = self.engine.load_checkpoint(self.dir, tag=tag + UNIVERSAL if universal else tag)
        except OSError as e:  # a file the manifest does not list (it was edited) is missing
            name = os.path.relpath(e.filename, self.dir) if e.filename else "a file"
            raise CheckpointError(
                f"cannot resume from {os.path.join(self.dir, tag)}: {name} cannot be read "
                f"({e.strerror}){_advice(self.dir, tag)}"
            ) from None
        if rank < world_size:
            _set_rng_state(own["rng"])
        if rank == 0:
            moved = set_aside_newer(self.dir, tag)
            if moved:
                print(
                    f"resumed from {tag}: the newer checkpoints {', '.join(moved[1])} were moved aside to "
                    f"{moved[0]} (nothing deleted)",
                    flush=True,
                )
        dist.barrier()  # no rank saves before the newer step dirs are out of the way
        return int(client["step"])
