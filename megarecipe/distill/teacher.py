"""The teacher of a distillation run: one finished run (RUN/export) or an ensemble directory whose
ensemble.json lists member runs; its logits are the mean of the members' logits (as the ensemble scorer
averages them). A teacher may also be a top-k cache of one (megarecipe/distill/cache.py).

The teacher is frozen: plain-PyTorch Llamas from the exports (no megatron, no DeepSpeed), in eval mode, without
gradients, never in an optimizer or a checkpoint; its identity (each member's weight hash) goes into the run's
run.json and the checkpoint's resume key instead.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass

import yaml

from megarecipe import ensembledir, errors, rundir
from megarecipe.data.tokenizer import file_sha256
from megarecipe.distill.sources import is_cache, read_info
from megarecipe.ensembledir import ENSEMBLE_JSON
from megarecipe.rundir import RunDir


class TeacherError(errors.UserError):
    """A teacher that cannot teach this student; the message names the field and the fix, in one line."""


@dataclass(frozen=True)
class Member:
    run: str  # the member's run directory (absolute)
    export: str  # its RUN/export
    vocab_size: int  # padded, from model.json
    tokenizer_sha256: str | None
    seq_len: int


def member_dirs(teacher: str) -> list[str]:
    """The run directories that make up `teacher`: itself (a run with export/), or ensemble.json's members."""
    where = f"distill.teacher={teacher!r}"

    if is_cache(teacher):
        return read_info(teacher)["teacher"]["members"]
    if not os.path.isdir(teacher):
        raise TeacherError(
            f"{where} is not a directory; give a finished run (with export/) or an ensemble dir (with {ENSEMBLE_JSON})"
        )
    listing = ensembledir.listing(teacher)
    if os.path.isfile(listing):
        try:
            with open(listing) as f:
                members = json.load(f).get("members")
        except (OSError, ValueError, AttributeError) as e:
            raise TeacherError(f"{where}: {listing} is unreadable ({e}); re-run `tools/ensemble.py eval`") from None
        if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
            raise TeacherError(f"{where}: {listing} has no 'members' list of run dirs; re-run `tools/ensemble.py eval`")
        return [os.path.abspath(m) for m in members]
    if os.path.isdir(RunDir(teacher).export):
        return [os.path.abspath(teacher)]
    raise TeacherError(f"{where} has neither export/ nor {ENSEMBLE_JSON}; give a finished run or an ensemble dir")


@functools.lru_cache(maxsize=None)
def members(teacher: str) -> tuple[Member, ...]:
    """Each member's export facts, read from its small files (no weights loaded)."""
    out = []
    for run in member_dirs(teacher):
        export = RunDir(run).export
        try:
            with open(os.path.join(export, rundir.MODEL_JSON)) as f:
                info = json.load(f)
            with open(os.path.join(export, rundir.CONFIG)) as f:
                seq_len = int(yaml.safe_load(f)["model"]["seq_len"])
            vocab = int(info["vocab_size"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise TeacherError(
                f"distill.teacher: member {run} has no readable export ({type(e).__name__}: {e}); "
                f"use finished runs whose RUN/export is complete"
            ) from None
        if not os.path.isfile(os.path.join(export, rundir.WEIGHTS)):
            raise TeacherError(f"distill.teacher: member {run} has no export/model.safetensors; use finished runs")
        out.append(Member(run, export, vocab, info.get("tokenizer_sha256"), seq_len))
    return tuple(out)


def check(teacher: str, tokenizer_sha256: str, tokenizer_vocab: int, seq_len: int) -> None:
    """Every member must speak the student's tokenizer, cover its vocabulary and read its sequence length."""
    for m in members(teacher):
        if m.tokenizer_sha256 != tokenizer_sha256:
            raise TeacherError(
                f"distill.teacher: member {m.run} was trained with another tokenizer than data.dir's "
                f"(sha256 {str(m.tokenizer_sha256)[:12]} vs {tokenizer_sha256[:12]}); distil on a "
                f"data dir made with the teacher's tokenizer"
            )
        if m.vocab_size < tokenizer_vocab:
            raise TeacherError(
                f"distill.teacher: member {m.run} has vocab size {m.vocab_size}, smaller than the "
                f"student's tokenizer's {tokenizer_vocab}; use a teacher trained on this tokenizer"
            )
        if m.seq_len != seq_len:
            raise TeacherError(
                f"distill.teacher: member {m.run} has model.seq_len={m.seq_len}, the student "
                f"{seq_len}; set model.seq_len={m.seq_len}"
            )


@functools.lru_cache(maxsize=None)
def identity(teacher: str) -> dict:
    """What the teacher is, exactly: its members and the sha256 of each member's weights."""
    if is_cache(teacher):  # the cache states its teacher; the members need not exist any more
        info = read_info(teacher)
        return {**info["teacher"], "cache": os.path.abspath(teacher), "cache_k": info["k"]}
    ms = members(teacher)
    return {
        "dir": os.path.abspath(teacher),
        "members": [m.run for m in ms],
        "sha256": [file_sha256(os.path.join(m.export, rundir.WEIGHTS)) for m in ms],
    }


class Teacher:
    """A microbatch (or `logits(tokens [b, s])`) -> the members' mean logits [b, s, V], in fp32; frozen."""

    def __init__(self, teacher: str, device, bf16: bool = False):
        import torch

        from megarecipe.model.export import load_export

        self.models, self.device = [], device
        for m in members(teacher):
            model, _, _ = load_export(m.export, device)
            model.requires_grad_(False)
            self.models.append(model.to(torch.bfloat16) if bf16 else model)
        self.vocab_size = min(m.vocab_size for m in members(teacher))

    def __call__(self, batch):
        """batch: a Microbatch (megarecipe/train/objectives.py)."""
        return self.logits(batch.tokens)

    def logits(self, tokens):
        import torch

        tokens = tokens.to(self.device)
        with torch.no_grad():
            total = None
            for model in self.models:
                logits = model(tokens)[..., : self.vocab_size].float()
                total = logits if total is None else total + logits
            return total / len(self.models)
