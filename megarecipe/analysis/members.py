"""An ensemble's members as exports on disk: found, checked against each other, loaded onto a device.

Reading a member reads only its export's config.yaml and model.json, so every mismatch is reported before
any weights are loaded or any process is started.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from megarecipe import errors, rundir
from megarecipe.config import Config
from megarecipe.data.errors import DataError
from megarecipe.data.meta import load_meta
from megarecipe.model.export import load_export, load_weights, read_config, read_info
from megarecipe.rundir import RunDir


class EnsembleError(errors.UserError):
    """Members that cannot be combined or scored; the message names the member and the fix."""


@dataclass
class Member:
    run_dir: str
    cfg: Config  # the run's config as exported
    info: dict  # model.json: vocab size, parameter counts, tokenizer hash

    @property
    def name(self) -> str:
        return os.path.basename(os.path.normpath(self.run_dir))

    @property
    def weights(self) -> str:
        return os.path.join(RunDir(self.run_dir).export, rundir.WEIGHTS)


def read_member(run_dir: str) -> Member:
    run = RunDir(run_dir)
    if not os.path.isdir(run.path):
        raise EnsembleError(f"{run_dir}: no such run directory; pass the run directories of finished members")
    missing = [
        n for n in (rundir.WEIGHTS, rundir.CONFIG, rundir.MODEL_JSON) if not os.path.isfile(os.path.join(run.export, n))
    ]
    if missing:
        state = (run.info() or {}).get("status", rundir.NOT_STARTED)
        raise EnsembleError(
            f"member {run_dir}: no export ({run.export}/{missing[0]} is missing; run.json says "
            f"{state}); finish its training (`ensemble.py train` resumes it) or leave it out"
        )

    try:
        return Member(run_dir, read_config(run.export), read_info(run.export))
    except ValueError as e:
        raise EnsembleError(f"member {run_dir}: {e}") from None


def check_compatible(members: list[Member]) -> None:
    """Same held-out tokens and vocabulary for all: data dir, tokenizer, vocab size, sequence length, val tokens."""
    if not members:
        raise EnsembleError("no members given; pass the run directories of the ensemble's members")
    first = members[0]
    for m in members[1:]:
        for what, a, b, fix in (
            (
                "data.dir",
                os.path.realpath(first.cfg.data.dir),
                os.path.realpath(m.cfg.data.dir),
                "members must be trained on the same data dir",
            ),
            (
                "tokenizer",
                first.info.get("tokenizer_sha256"),
                m.info.get("tokenizer_sha256"),
                "members must share the data dir's tokenizer",
            ),
            ("vocab size", first.info["vocab_size"], m.info["vocab_size"], "members must share the vocabulary"),
            (
                "model.seq_len",
                first.cfg.model.seq_len,
                m.cfg.model.seq_len,
                "members must be trained with the same sequence length",
            ),
            (
                "data.val_tokens",
                first.cfg.data.val_tokens,
                m.cfg.data.val_tokens,
                "members must be scored on the same held-out tokens",
            ),
        ):
            if a != b:
                raise EnsembleError(
                    f"member {m.run_dir}: its {what} is {b}, but {first.run_dir} has {a}; {fix} "
                    f"(leave {m.name} out or retrain it)"
                )


def check_heldout(members: list[Member]) -> None:
    """The data dir scored must hold what each member was trained and measured on (run.json's heldout): a data
    dir prepared again in place, from other text with the same tokenizer, passes every other check."""
    data_dir = members[0].cfg.data.dir
    try:
        now = load_meta(data_dir).content_sha256()
    except DataError:
        return  # no data there: the scorer says so, naming the file
    for m in members:
        was = ((RunDir(m.run_dir).info() or {}).get("heldout") or {}).get("data_sha256")
        if was and was != now:
            raise EnsembleError(
                f"member {m.run_dir}: trained on data contents {was[:12]}, but data.dir={data_dir} "
                f"now holds {now[:12]} (prepared again since?); score it on the data it was trained "
                f"on (prepare that text again there) or retrain it"
            )


def read_members(run_dirs: list[str]) -> list[Member]:
    members = [read_member(d) for d in run_dirs]
    check_compatible(members)
    check_heldout(members)
    return members


def load_model(member: Member, device, dtype: torch.dtype, shell=None):
    """The member's model on `device`: into `shell` (a model of the same shape) when given, else a new one."""
    if shell is None:
        model = load_export(RunDir(member.run_dir).export, "cpu")[0]
        return model.to(device=device, dtype=dtype)
    # copied to the device and cast, one tensor at a time
    shell.load_state_dict(load_weights(RunDir(member.run_dir).export), strict=True)
    return shell
