"""Held-out loss of exported models, without DeepSpeed or megatron: one model, or an ensemble scored for
K = 1..n members (megarecipe/analysis/ensemble.py), on the same held-out tokens as every run's `val/loss`.

An ensemble's result is a run directory of its own: `ensemble/val_loss` at step K in its events, the members'
shared facts, run.json (kind ensemble) and ensemble.json naming the members, loss_vs_members.png; the
scaling-fit tool reads it with `--over members`.
"""

from __future__ import annotations

import os

from megarecipe import atomic, ensembledir, rundir
from megarecipe.analysis.ensemble import default_device, ensemble_losses, torch_threads
from megarecipe.analysis.members import EnsembleError, Member, read_members  # noqa: F401 (re-exported)
from megarecipe.analysis.runs import read_run
from megarecipe.ensembledir import ENSEMBLE_JSON, PLOT  # noqa: F401  (re-exported)
from megarecipe.rundir import RunDir

SHARED = ("params", "params_non_embedding", "train_tokens", "epochs", "lr", "weight_decay", "global_batch_tokens")


def validation_loss(
    model, data_dir: str, seq_len: int, max_tokens: int | None = None, batch_size: int = 8, device="cpu"
) -> float:
    """Mean per-token cross-entropy of one model (tokens -> logits): the trainer's final val/loss."""
    return ensemble_losses([model], data_dir, seq_len, max_tokens, batch_size, device)[0]


def score_members(
    members: list[Member], device=None, resident: int | None = None, chunk_batches: int = 16, progress: bool = False
) -> list[float]:
    cfg = members[0].cfg
    return ensemble_losses(
        members,
        cfg.data.dir,
        cfg.model.seq_len,
        max_tokens=cfg.data.val_tokens,
        batch_size=cfg.train.eval_batch_size,
        device=device,
        resident=resident,
        chunk_batches=chunk_batches,
        progress=progress,
    )


def weights_identity(run_dirs: list[str]) -> list[list]:
    """Each member's exported weights by path, inode, size and modification time: a score is current only while
    these are unchanged (a member retrained in place has new weights under the same path; other weights
    moved there with their times kept, as `rsync -a` or `mv` do, have a new inode)."""
    out = []
    for run_dir in run_dirs:
        weights = os.path.join(RunDir(run_dir).export, rundir.WEIGHTS)
        st = os.stat(weights) if os.path.isfile(weights) else None
        out.append([os.path.abspath(weights), st and st.st_ino, st and st.st_size, st and st.st_mtime_ns])
    return out


def write_result(out_dir: str, members: list[Member], losses: list[float]) -> None:
    """The ensemble's run directory: events (facts at step 0, ensemble/val_loss at step K), ensemble.json,
    run.json and the plot of loss against K."""
    from torch.utils.tensorboard import SummaryWriter

    from megarecipe.analysis.plots import plot_members

    out = RunDir(out_dir)
    out.check_kind("ensemble")
    first = read_run(members[0].run_dir)
    facts = {name: getattr(first, name) for name in SHARED if getattr(first, name, None) is not None}
    facts["members"] = len(members)
    os.makedirs(out.path, exist_ok=True)
    out.update(status=rundir.RUNNING, kind="ensemble")  # until events, ensemble.json and run.json agree again
    tb = atomic.build_dir(out.tb)  # a re-evaluation replaces the curve whole rather than appending a second one
    writer = SummaryWriter(tb)
    for name, value in facts.items():
        writer.add_scalar(rundir.fact_tag(name), float(value), 0)
    for k, loss in enumerate(losses, start=1):
        writer.add_scalar(rundir.ENSEMBLE_VAL_LOSS, loss, k)
    writer.close()
    atomic.replace_dir(tb, out.tb)
    paths = [os.path.abspath(m.run_dir) for m in members]
    seeds = [m.cfg.run.seed for m in members]
    member_losses = [read_run(m.run_dir).final_val_loss for m in members]
    ensembledir.write(
        out.path,
        {
            "members": paths,
            "seeds": seeds,
            "member_val_loss": member_losses,
            "val_loss_by_k": losses,
            "weights": weights_identity(paths),
        },
    )
    plot_members(losses, member_losses, out.join(PLOT))
    out.update(
        status=rundir.FINISHED,
        kind="ensemble",
        facts=facts,
        members=paths,
        heldout=(RunDir(members[0].run_dir).info() or {}).get("heldout"),  # the members' own held-out set
        final={"val_loss": losses[-1], "val_loss_by_k": losses},
    )


def evaluate_ensemble(
    run_dirs: list[str], out_dir: str, device=None, resident: int | None = None, threads: int | None = None
) -> list[float]:
    """Score K = 1..n of the given runs (in the given order) in this process and write the ensemble's run dir;
    `threads`: torch's CPU threads while scoring (None: as they are)."""
    members = read_members(run_dirs)
    with torch_threads(threads):
        losses = score_members(members, device or default_device(), resident)
    write_result(out_dir, members, losses)
    return losses


def scored_prefix(run_dirs: list[str], scored_dir: str) -> list[float] | None:
    """Loss(K) for K = 1..len(run_dirs) read from an ensemble dir already scored, when its members start with
    these runs and their weights are unchanged; else None. Loss(K) depends on the first K members only (they are
    summed in order), so the prefix is exactly what scoring these runs again would give."""
    have = ensembledir.read(scored_dir)
    n = len(run_dirs)
    members, weights, losses = have.get("members"), have.get("weights"), have.get("val_loss_by_k")
    if not all(isinstance(x, list) and len(x) >= n for x in (members, weights, losses)):
        return None
    if members[:n] != list(run_dirs) or weights[:n] != weights_identity(run_dirs):
        return None
    return losses[:n]


def format_losses(losses: list[float], member_losses: list | None = None) -> str:
    lines = ["K  ensemble/val_loss" + ("  member val/loss" if member_losses else "")]
    for k, loss in enumerate(losses, start=1):
        extra = f"  {member_losses[k - 1]:.4f}" if member_losses and member_losses[k - 1] is not None else ""
        lines.append(f"{k:<2} {loss:.4f}{' ' * 11}{extra}")
    return "\n".join(lines)
