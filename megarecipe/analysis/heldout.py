"""Held-out loss of exported models, without DeepSpeed: one model, or an ensemble - the mean of the members'
logits (a renormalised geometric mean of their probabilities) - for K = 1..n members, on the same held-out
tokens as every run's `val/loss`.

An ensemble's result is a run directory of its own: `ensemble/val_loss` at step K in its events, the members'
shared facts, and run.json / ensemble.json naming the members, which the scaling-fit tool reads.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from megarecipe import atomic, rundir
from megarecipe.data.dataset import IGNORE_INDEX, validation_batches
from megarecipe.model.export import load_export
from megarecipe.rundir import RunDir

SHARED = ("params", "params_non_embedding", "train_tokens", "epochs", "lr", "weight_decay", "global_batch_tokens")


class EnsembleError(ValueError):
    """Members that cannot be combined, named with the fix."""


def load_members(run_dirs: list[str], device="cpu") -> list[tuple]:
    """(model, config, model.json) of each run's export; all must share tokenizer, vocab and sequence length."""
    if not run_dirs:
        raise EnsembleError("no member runs given; pass the run directories of the ensemble's members")
    members = []
    for run_dir in run_dirs:
        export = RunDir(run_dir).export
        if not os.path.isdir(export):
            raise EnsembleError(f"{run_dir} has no export/; only finished runs can be ensembled")
        members.append(load_export(export, device))
    _, cfg0, info0 = members[0]
    for run_dir, (_, cfg, info) in zip(run_dirs[1:], members[1:], strict=True):
        for what, a, b in (("tokenizer", info0["tokenizer_sha256"], info["tokenizer_sha256"]),
                           ("vocab size", info0["vocab_size"], info["vocab_size"]),
                           ("model.seq_len", cfg0.model.seq_len, cfg.model.seq_len)):
            if a != b:
                raise EnsembleError(f"{run_dir} differs from {run_dirs[0]} in its {what} ({b} vs {a}); "
                                    f"ensemble runs trained on the same data dir with the same tokenizer")
    return members


@torch.no_grad()
def ensemble_losses(models: list, data_dir: str, seq_len: int, max_tokens: int | None = None, batch_size: int = 8,
                    device="cpu") -> list[float]:
    """Mean per-token loss of the first k members' averaged logits, for k = 1..len(models)."""
    totals, count = torch.zeros(len(models), dtype=torch.float64), 0
    for tokens, targets in validation_batches(data_dir, seq_len, batch_size, max_tokens=max_tokens):
        tokens, targets = tokens.to(device), targets.to(device).flatten()
        logit_sum = None
        for k, model in enumerate(models):
            logits = model(tokens).float().flatten(0, 1)
            logit_sum = logits if logit_sum is None else logit_sum + logits
            totals[k] += F.cross_entropy(logit_sum / (k + 1), targets, ignore_index=IGNORE_INDEX,
                                         reduction="sum").item()
        count += int((targets != IGNORE_INDEX).sum())
    return (totals / count).tolist()


def validation_loss(model, data_dir: str, seq_len: int, max_tokens: int | None = None, batch_size: int = 8,
                    device="cpu") -> float:
    """Mean per-token cross-entropy of one model (tokens -> logits): the trainer's final val/loss."""
    return ensemble_losses([model], data_dir, seq_len, max_tokens, batch_size, device)[0]


def evaluate_ensemble(run_dirs: list[str], out_dir: str, device="cpu") -> list[float]:
    """Score K = 1..n of the given runs (in the given order) and write the ensemble's run directory."""
    from torch.utils.tensorboard import SummaryWriter

    from megarecipe.analysis.runs import read_run

    members = load_members(run_dirs, device)
    cfg = members[0][1]
    losses = ensemble_losses([m for m, _, _ in members], cfg.data.dir, cfg.model.seq_len,
                             max_tokens=cfg.data.val_tokens, batch_size=cfg.train.eval_batch_size, device=device)
    first = read_run(run_dirs[0])
    facts = {name: getattr(first, name) for name in SHARED if getattr(first, name, None) is not None}
    facts["members"] = len(members)
    out = RunDir(out_dir)
    os.makedirs(out.path, exist_ok=True)
    writer = SummaryWriter(out.tb)
    for name, value in facts.items():
        writer.add_scalar(rundir.fact_tag(name), float(value), 0)
    for k, loss in enumerate(losses, start=1):
        writer.add_scalar(rundir.ENSEMBLE_VAL_LOSS, loss, k)
    writer.close()
    paths = [os.path.abspath(r) for r in run_dirs]
    atomic.write_json(out.join("ensemble.json"), {"members": paths, "val_loss_by_k": losses})
    out.update(status=rundir.FINISHED, kind="ensemble", facts=facts, members=paths,
               final={"val_loss": losses[-1], "val_loss_by_k": losses})
    return losses
