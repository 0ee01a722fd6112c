"""How much of a teacher's gain a distilled student keeps, read from run directories alone:
retained = (L_single - L_student) / (L_single - L_teacher), each L a final held-out loss on the same tokens."""

from __future__ import annotations

import os
from dataclasses import dataclass

from megarecipe import ensembledir
from megarecipe.analysis.runs import RunReadError, read_run
from megarecipe.rundir import RunDir


@dataclass
class Retained:
    student: str
    single: str
    teacher: str
    student_loss: float
    single_loss: float
    teacher_loss: float

    @property
    def fraction(self) -> float:
        return (self.single_loss - self.student_loss) / (self.single_loss - self.teacher_loss)


def final_loss(path: str, members: list | None = None) -> float:
    """A run's final val/loss, or an ensemble dir's loss with every member averaged; with `members` (the runs that
    taught a student), the loss of exactly those, which must be the ensemble's first K."""
    try:
        rec = read_run(path)
    except RunReadError as e:
        raise RunReadError(f"{path}: {e}") from None
    if rec.final_val_loss is not None:
        return rec.final_val_loss
    if not members:
        return rec.ensemble_losses[max(rec.ensemble_losses)]
    listed = ensembledir.read(path).get("members")
    listed = [os.path.abspath(m) for m in listed if isinstance(m, str)] if isinstance(listed, list) else []
    k = len(members)
    if listed[:k] != [os.path.abspath(m) for m in members] or k not in rec.ensemble_losses:
        raise RunReadError(
            f"{path}: its ensemble.json no longer begins with the {k} member(s) that taught the student "
            f"(it was re-scored since); score those again (`ensemble.py eval --runs ... --out DIR`) and "
            f"pass --teacher DIR"
        )
    return rec.ensemble_losses[k]


def retained(student: str, single: str, teacher: str | None = None) -> Retained:
    """teacher: by default the one the student's run.json names."""
    for path in (student, single, teacher):
        if path is not None and not os.path.isdir(path):
            raise RunReadError(
                f"{path}: no such run directory; give the run dirs of the student, the single model "
                f"and (optionally) the teacher"
            )
    taught = (RunDir(student).info() or {}).get("distill") or {}
    if teacher is None:
        teacher = taught.get("dir")
        if not teacher:
            raise RunReadError(f"{student}: run.json names no teacher (not a distillation run?); pass --teacher")
    same = taught.get("dir") and os.path.realpath(teacher) == os.path.realpath(taught["dir"])
    r = Retained(
        student,
        single,
        teacher,
        final_loss(student),
        final_loss(single),
        final_loss(teacher, taught.get("members") if same else None),
    )
    if not r.single_loss > r.teacher_loss:
        raise RunReadError(
            f"the teacher {teacher} ({r.teacher_loss:.4f}) is no better than the single run {single} "
            f"({r.single_loss:.4f}), so no gain can be retained; compare against the plain run of the "
            f"student's shape"
        )
    return r
