"""Ensemble training: n members that differ only by run.seed, each its own resumable run under ENS/members/,
started through the run launcher; where they stand is read from their run directories alone.

The directory's files are named by megarecipe/ensembledir.py; its run.json (kind "ensemble") holds the plan
(config, overrides, members) and status running while `train` runs.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass

from megarecipe import errors, rundir
from megarecipe.config import load_config
from megarecipe.ensembledir import MEMBERS, member_dir
from megarecipe.launch import LaunchError, RunSpec, launch
from megarecipe.rundir import RunDir, RunDirError


class EnsembleSetupError(errors.UserError):
    """An ensemble directory or request that cannot be used as it is; one line with the fix."""


@dataclass
class MemberState:
    seed: int
    run_dir: str
    state: str  # rundir's: not started / running / interrupted / stopped / finished / failed
    detail: str = ""  # step reached, or why it failed


def shifted(config: str, overrides: list[str]) -> list[str]:
    """The paper's member recipe from the single model's settings: 2x epochs, 0.5x weight decay, same LR."""
    cfg = load_config(config, overrides)
    return [f"train.epochs={2 * cfg.train.epochs}", f"optim.weight_decay={cfg.optim.weight_decay * 0.5!r}"]


def member_overrides(config: str, overrides: list[str], member_shift: bool = False) -> list[str]:
    for item in overrides:
        if item.split("=", 1)[0] in ("run.seed", "run.dir", "run.resume_from"):
            raise EnsembleSetupError(
                f"{item}: the ensemble sets {item.split('=', 1)[0]} for each member; leave "
                f"it out (members are OUT/members/seed<i> with run.seed=i)"
            )
    load_config(config, overrides)  # a bad setting is one line now, not n failed members later
    return [*overrides, *(shifted(config, overrides) if member_shift else [])]


def specs(
    config: str, overrides: list[str], out: str, members: int, processes: int = 1, member_shift: bool = False
) -> list:
    """One RunSpec per member; the launcher adds run.dir and run.resume=true."""
    common = member_overrides(config, overrides, member_shift)
    return [
        RunSpec(
            config=config, overrides=[*common, f"run.seed={seed}"], run_dir=member_dir(out, seed), processes=processes
        )
        for seed in range(1, members + 1)
    ]


def train(
    config: str,
    overrides: list[str],
    out: str,
    members: int,
    parallel: int = 1,
    backend: str = "local",
    processes: int = 1,
    member_shift: bool = False,
    retries: int = 1,
    on_done=None,
) -> list[MemberState]:
    """Train (or resume) members 1..n, `parallel` at once. Finished members are read back, not retrained;
    killed and failed ones continue from their last checkpoint."""
    todo = specs(config, overrides, out, members, processes, member_shift)
    ens = RunDir(out)
    plan = {
        "config": os.path.abspath(config) if os.path.isfile(config) else config,
        "overrides": list(overrides),
        "member_shift": member_shift,
        "processes": processes,
        "members": [os.path.abspath(s.run_dir) for s in todo],
    }
    try:
        ens.check_kind("ensemble")
        with ens.hold():
            before = (ens.info() or {}).get("status")
            pending = [s for s in todo if RunDir(s.run_dir).state() != rundir.FINISHED]
            ens.update(kind="ensemble", status=rundir.RUNNING, plan=plan)
            try:
                if pending:  # a member that failed in an earlier call gets another go from its checkpoint
                    launch(
                        pending, backend=backend, parallel=parallel, retries=retries, on_done=on_done, retry_failed=True
                    )
            finally:
                # finished = evaluated (the evaluation says so); training alone leaves the ensemble stopped.
                # Members past the requested count (an earlier, larger call's) are not this call's to finish.
                states = [s for s in status(out, members) if s.seed <= members]
                ens.update(status=before if before == rundir.FINISHED and not pending else rundir.STOPPED)
    except (RunDirError, LaunchError) as e:
        raise EnsembleSetupError(str(e)) from None
    return states


def _seed_of(path: str) -> int | None:
    m = re.fullmatch(r"seed(\d+)", os.path.basename(os.path.normpath(path)))
    return int(m.group(1)) if m else None


def status(out: str, members: int | None = None) -> list[MemberState]:
    """Each member's state from its run directory alone (run.json, its lock, its checkpoints)."""
    if not os.path.isdir(out):
        raise EnsembleSetupError(
            f"{out}: no such ensemble directory; create it with `ensemble.py train CONFIG --members N --out {out}`"
        )
    try:
        plan = (RunDir(out).info() or {}).get("plan")
    except RunDirError as e:
        raise EnsembleSetupError(str(e)) from None
    planned = plan.get("members") if isinstance(plan, dict) else None  # members not started yet are listed here
    planned = [p for p in planned if isinstance(p, str)] if isinstance(planned, list) else []
    found = sorted(glob.glob(os.path.join(out, MEMBERS, "seed*")), key=lambda p: _seed_of(p) or 0)
    seeds = sorted({s for s in map(_seed_of, [*planned, *found]) if s is not None} | set(range(1, (members or 0) + 1)))
    if not seeds:
        raise EnsembleSetupError(
            f"{out}: holds no members ({MEMBERS}/seed<i>); train them with `ensemble.py train "
            f"CONFIG --members N --out {out}`"
        )
    return [_member_state(seed, member_dir(out, seed)) for seed in seeds]


def _member_state(seed: int, path: str) -> MemberState:
    run = RunDir(path)
    try:
        state, info = run.state(), run.info() or {}
    except RunDirError as e:
        return MemberState(seed, path, rundir.FAILED, str(e))
    total = (info.get("facts") or {}).get("total_steps")
    saved = _checkpoint_step(run.checkpoints)  # run.json's step is written at the start and at the end only
    steps = [s for s in (info.get("step"), saved) if isinstance(s, int)]
    step = max(steps) if steps else None
    detail = f"step {step}/{total}" if step is not None and total else ""
    signal = _killed_by(info.get("error"))
    if state == rundir.FAILED and signal and saved:  # the launcher gave up on a killed process: it resumes
        return MemberState(
            seed,
            path,
            rundir.INTERRUPTED,
            f"{detail}, killed by signal {signal} with a checkpoint at step {saved}; the next `train` resumes it",
        )
    if state == rundir.FAILED:
        detail = f"{detail}: {info.get('error') or 'see its log'}" if detail else info.get("error") or ""
    elif state == rundir.INTERRUPTED:
        detail = f"{detail}, killed (no process holds it); the next `train` resumes it".lstrip(", ")
    elif state == rundir.FINISHED and (info.get("final") or {}).get("val_loss") is not None:
        detail = f"{detail}, val/loss {info['final']['val_loss']:.4f}".lstrip(", ")
    return MemberState(seed, path, state, detail)


def _checkpoint_step(ckpt_dir: str) -> int | None:
    """The step of the checkpoint the `latest` pointer names (where a resume continues), if it is there."""
    try:
        with open(os.path.join(ckpt_dir, rundir.POINTER), "rb") as f:
            tag = f.read(64).strip().decode("ascii", "replace")
    except OSError:
        return None
    step = rundir.tag_step(tag)
    return step if step is not None and os.path.isdir(os.path.join(ckpt_dir, tag)) else None


def _killed_by(error) -> int | None:
    """The signal in the launcher's 'exit code -9' (or a shell's 137), else None."""
    m = re.fullmatch(r"exit code (-?\d+)", error) if isinstance(error, str) else None
    code = int(m.group(1)) if m else 0
    return -code if code < 0 else code - 128 if 128 < code < 160 else None


def member_dirs(out: str, members: int | None = None) -> list[str]:
    """The run dirs of the first `members` members (all when None), each finished; otherwise one line that says
    which are not and what to do."""
    states = status(out)
    if members is not None and len(states) < members:
        raise EnsembleSetupError(
            f"{out}: --members {members} but the ensemble has {len(states)}; train more with "
            f"`ensemble.py train CONFIG --members {members} --out {out}` or pass --members "
            f"{len(states)}"
        )
    chosen = states[:members] if members else states
    unfinished = [s for s in chosen if s.state != rundir.FINISHED]
    if unfinished:
        done = len(chosen) - len(unfinished)
        which = ", ".join(f"seed{s.seed}: {s.state}" for s in unfinished[:4])
        raise EnsembleSetupError(
            f"{out}: {done} of {len(chosen)} members are finished ({which}); run "
            f"`ensemble.py train` again to finish them, or pass --members {done}"
            if done
            else f"{out}: no member is finished ({which}); run `ensemble.py train`"
        )
    return [s.run_dir for s in chosen]


def format_status(states: list[MemberState]) -> str:
    width = max(len("member"), *(len(f"seed{s.seed}") for s in states))
    lines = [f"{'member'.ljust(width)}  {'state'.ljust(11)}  detail"]
    lines += [f"{f'seed{s.seed}'.ljust(width)}  {s.state.ljust(11)}  {s.detail}".rstrip() for s in states]
    done = sum(s.state == rundir.FINISHED for s in states)
    lines.append(f"{done} of {len(states)} finished")
    return "\n".join(lines)
