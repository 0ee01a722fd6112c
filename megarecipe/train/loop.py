"""The training loop: batch, step, update or skip, log, evaluate, checkpoint, stop.

The command is megarecipe/cli/train.py (`python -m megarecipe.cli.train CONFIG key=value ...`); the launchers
in launchers/ run it on every rank.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import nullcontext

from megarecipe import errors, rundir
from megarecipe.config import (
    Config,
    Layout,
    mix_sources,
    pad_vocab,
    resolve_kernels,
    run_settings,
    save_config,
    settings_sha256,
    to_yaml,
)
from megarecipe.data.dataset import TokenDataset
from megarecipe.data.meta import load_meta
from megarecipe.data.mix import MixDataset
from megarecipe.distill import teacher
from megarecipe.distill.cache import CachedTeacher, is_cache
from megarecipe.distill.teacher import Teacher
from megarecipe.model.export import write_export
from megarecipe.model.size import count_params, flops_per_token
from megarecipe.parallel import distributed
from megarecipe.parallel.distributed import StopRequest, all_max
from megarecipe.parallel.memory import MemoryProbe
from megarecipe.rank_errors import agreed
from megarecipe.rundir import RunDir
from megarecipe.system import since_start
from megarecipe.train import checkpoint, universal
from megarecipe.train.console import Console, log_line, memory_bytes
from megarecipe.train.objectives import Distill
from megarecipe.train.validation import Validator
from megarecipe.train.wandb_writer import WandbWriter


class TrainingError(errors.RunError):
    """The run cannot go on (a non-finite loss, say); the message names the step and the fix."""


def resume_key(cfg: Config, layout: Layout) -> dict:
    """What a resumed run must share with its checkpoint: the sharding, and every setting that decides step
    s's data, LR and update. Plain values, compared key by key."""
    meta = load_meta(cfg.data.dir)
    key = {
        "world_size": layout.world_size,
        "tp": layout.tp,
        "pp": layout.pp,
        "zero_stage": layout.zero_stage,
        "seed": cfg.run.seed,
        "global_batch_size": layout.global_batch_size,
        "seq_len": layout.seq_len,
        "num_sequences": layout.num_sequences,
        "total_steps": layout.total_steps,
        "tokenizer_sha256": meta.tokenizer_sha256,
        # the tokens themselves (another data dir with the same tokenizer would train on other text), and the
        # held-out tokens val/loss is measured on
        "data.dir (contents sha256)": meta.content_sha256(),
        "data.val_tokens": min(meta.val_tokens, cfg.data.val_tokens or meta.val_tokens),
    }
    settings = run_settings(cfg)
    for section in ("model", "optim"):
        key.update({f"{section}.{k}": v for k, v in settings[section].items()})
    key.update({f"train.{k}": settings["train"][k] for k in ("epochs", "micro_batch_size", "precision")})
    key.update(distill_key(cfg))
    if cfg.model.kernels == "te":  # Transformer Engine names the norm weights differently from the other kernels
        key["model.kernels (parameter names)"] = "te"
    if cfg.data.mix:  # what else is mixed in, by content; a single-dir run's key is as it always was
        key["data.mix (contents sha256, ratio)"] = [[m["contents_sha256"], m["ratio"]] for m in mix_facts(cfg)[1:]]
    return key


def heldout_set(key: dict) -> dict:
    """run.json's "heldout": which tokens val/loss is measured on, so runs scored on other ones are not fitted
    or compared together."""
    return {"data_sha256": key["data.dir (contents sha256)"], "val_tokens": key["data.val_tokens"]}


def mix_facts(cfg: Config) -> list[dict] | None:
    """run.json's "data_mix": each mixed dir, its ratio, content hash and origin (a sampled dir's teacher)."""
    if not cfg.data.mix:
        return None
    out = []
    for where, ratio in mix_sources(cfg.data):
        meta = load_meta(where)
        out.append(
            {
                "dir": os.path.abspath(where),
                "ratio": str(ratio),
                "contents_sha256": meta.content_sha256(),
                "train_tokens": meta.train_tokens,
                "source": meta.source,
            }
        )
    return out


def distill_key(cfg: Config) -> dict:
    """The teacher by its weights (not its path), and how it teaches; a plain run has no teacher."""
    k = cfg.distill
    if not k.teacher:
        return {"distill.teacher_sha256": None}
    who = teacher.identity(k.teacher)
    return {
        "distill.teacher_sha256": who["sha256"],
        "distill.alpha": k.alpha,
        "distill.temperature": k.temperature,
        **({"distill.cache_k": who["cache_k"]} if "cache_k" in who else {}),
    }


def distill_facts(cfg: Config) -> dict | None:
    """run.json's "distill": the teacher's members and weight hashes, alpha and temperature."""
    k = cfg.distill
    if not k.teacher:
        return None
    return {**teacher.identity(k.teacher), "alpha": k.alpha, "temperature": k.temperature}


def run_facts(cfg: Config, layout: Layout) -> dict:

    params, params_non_embedding = count_params(cfg.model, layout.vocab_size)
    return {
        "params": params,
        "params_non_embedding": params_non_embedding,
        "train_tokens": layout.train_tokens,
        "epochs": cfg.train.epochs,
        "lr": cfg.optim.lr,
        "weight_decay": cfg.optim.weight_decay,
        "seed": cfg.run.seed,
        "global_batch_tokens": layout.global_batch_size * layout.seq_len,
        "total_steps": layout.total_steps,
        "world_size": layout.world_size,
    }


def check_run_dir(cfg: Config, run: RunDir, key: dict) -> str | None:
    """Before any process group: is this a new run, or a resume of a checkpoint that matches? Returns the tag
    to resume from (None: start at step 0)."""
    run.info()  # a damaged run.json is refused now, not after the model is built
    has_checkpoint = checkpoint.exists(run.checkpoints)
    if has_checkpoint and not cfg.run.resume:
        raise TrainingError(
            f"run.dir={cfg.run.dir!r} already holds a checkpoint; set run.resume=true to continue "
            f"it or choose another run.dir"
        )
    tag = checkpoint.resume_tag(run.checkpoints, cfg.run.resume_from) if cfg.run.resume else None
    if tag:
        saved = checkpoint.saved_resume_key(run.checkpoints, tag)
        # a key only one side has is None on the other: keys that exist only while a feature is in use
        changed = {k: (saved.get(k), key.get(k)) for k in {**saved, **key} if key.get(k) != saved.get(k)}
        moved = universal.changes(saved, key)
        _compare_vocab_rows(cfg, saved, key, changed)
        if set(changed) - set(moved):
            what = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items())
            keep = "the number of processes or the TP size may change, the rest not: keep" if moved else "resume with"
            raise TrainingError(
                f"run.dir={cfg.run.dir!r} cannot resume: {what}; {keep} the settings it was "
                f"checkpointed with (same processes, layout, seed, batch, data, budget, model, "
                f"optimizer and teacher) or start a new run.dir"
            )
        why = universal.cannot_convert(saved, key) if moved else None
        if why:
            raise TrainingError(
                f"run.dir={cfg.run.dir!r} cannot resume {tag} on another layout "
                f"({universal.describe(universal.layout(saved))} -> "
                f"{universal.describe(universal.layout(key))}): {why}; resume on "
                f"{universal.describe(universal.layout(saved))} or start a new run.dir"
            )
    return tag


def _compare_vocab_rows(cfg: Config, saved: dict, key: dict, changed: dict, vocab: int | None = None) -> None:
    """model.vocab_size null means the tokenizer's (`vocab`), padded for the TP size: on another TP the same
    setting may mean other rows, and model.vocab_size=ROWS the same ones. Compares the rows, in `changed`."""
    if "model.vocab_size" not in changed and saved.get("tp") == key.get("tp"):
        return
    vocab = vocab or load_meta(cfg.data.dir).vocab_size
    rows = [k.get("model.vocab_size") or pad_vocab(vocab, k.get("tp") or 1) for k in (saved, key)]
    changed.pop("model.vocab_size", None)
    if rows[0] != rows[1]:
        changed["model.vocab_size (padded rows)"] = tuple(rows)
        if key.get("model.vocab_size") is None:
            raise TrainingError(
                f"run.dir={cfg.run.dir!r} cannot resume on tp={key.get('tp')}: the vocabulary pads "
                f"to {rows[1]} rows there, the checkpoint has {rows[0]}; add model.vocab_size="
                f"{rows[0]} to keep its rows"
            )


def train(cfg: Config, layout: Layout) -> None:

    run = RunDir(cfg.run.dir)
    key = resume_key(cfg, layout)
    first = distributed.rank() == 0
    with run.hold() if first else nullcontext():
        tag = check_run_dir(cfg, run, key)
        if tag == checkpoint.tag_for(layout.total_steps) and (run.info() or {}).get("status") == rundir.FINISHED:
            if first:  # a requeued or repeated launch: the result, its export and run.json stay as they are
                print(
                    f"run.dir={cfg.run.dir!r} already finished at step {layout.total_steps}; nothing to do", flush=True
                )
            return
        if first and not tag:  # a resumed run keeps the config it started with
            os.makedirs(run.path, exist_ok=True)
            save_config(cfg, run.config)
        device = distributed.init(layout.tp, layout.pp, cfg.run.seed)
        try:
            _loop(cfg, layout, run, tag, key, device)
        except Exception as e:
            if first:
                first_line = str(e).splitlines()[0] if str(e) else ""
                what = "another rank stopped" if distributed.lost_peer(e) else type(e).__name__
                try:
                    run.update(status=rundir.FAILED, error=f"{what}: {first_line}")
                except OSError:  # a full disk: the error itself is what the user needs to see
                    pass
            raise
        distributed.shutdown()


def _loop(cfg: Config, layout: Layout, run: RunDir, tag: str | None, key: dict, device) -> None:
    import torch.distributed as dist
    from megatron.core import parallel_state as ps

    from megarecipe.model.llama import build_model
    from megarecipe.parallel.engine import build_engine, skip_update
    from megarecipe.train.metrics import Writer
    from megarecipe.train.step import Stepper

    first = dist.get_rank() == 0
    bf16 = cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and device.type == "cuda")
    kernels = resolve_kernels(cfg.model.kernels, device.type == "cuda")
    model = build_model(cfg.model, layout.vocab_size, bf16=bf16, kernels=kernels)
    if cfg.model.init_from and not tag:  # a resumed run has its own weights
        from megarecipe.parallel.hf_init import load_hf_weights

        try:
            load_hf_weights(model, cfg.model.init_from, cfg.model)
        except ValueError as e:  # the directory's config.json and weights disagree
            raise TrainingError(str(e)) from None
    saved = checkpoint.saved_resume_key(run.checkpoints, tag) if tag else {}
    relayout = bool(tag and universal.changes(saved, key))
    if relayout:
        _convert(run, tag, saved, key)
    engine = build_engine(model, cfg, layout, bf16, load_universal=relayout)
    stepper = Stepper(
        engine, model, layout.seq_len, layout.micro_batch_size, device, objective=_objective(cfg, layout, device, bf16)
    )
    dp_rank, dp_size = ps.get_data_parallel_rank(), ps.get_data_parallel_world_size()
    if cfg.data.mix:
        data = MixDataset(mix_sources(cfg.data), layout.seq_len, cfg.data.train_tokens, seed=cfg.run.seed)
    else:
        data = TokenDataset(cfg.data.dir, layout.seq_len, cfg.data.train_tokens, seed=cfg.run.seed)
    validator = Validator(
        stepper,
        cfg.data.dir,
        layout.seq_len,
        cfg.train.eval_batch_size,
        cfg.data.val_tokens,
        cfg.train.eval_every,
        layout.total_steps,
        dp_rank,
        dp_size,
    )
    checkpointer = checkpoint.Checkpointer(
        engine, run.checkpoints, cfg.train.checkpoint_every, cfg.train.keep_checkpoints, key
    )

    start = checkpointer.restore(tag, saved["world_size"], universal=relayout) if tag else 0
    if relayout and first:  # run.json keeps every layout the run has had
        change = {
            "step": start,
            "from": universal.layout(saved),
            "to": universal.layout(key),
            "universal": universal.path(run.checkpoints, tag),
        }
        run.update(layout_changes=[*((run.info() or {}).get("layout_changes") or []), change])
    if start == 0 and first:
        _remove_old_events(run.tb)  # an earlier attempt that never checkpointed
    also = None
    if first and cfg.logging.wandb:
        also = WandbWriter(run, cfg, resumed=bool(start))
    writer = Writer(run.tb, enabled=first, start_step=start + 1 if start else 0, also=also)
    facts = run_facts(cfg, layout)
    if first:
        run.update(
            status=rundir.RUNNING,
            kind="train",
            facts=facts,
            distill=distill_facts(cfg),
            **({"data_mix": mix_facts(cfg)} if cfg.data.mix else {}),
            settings_sha256=settings_sha256(cfg),
            kernels=kernels,
            heldout=heldout_set(key),
            step=start,
            started=time.time(),
            error=None,
        )
    if start == 0:
        writer.run_facts(facts, to_yaml(cfg))
    meter, perf = _meter(cfg, layout, device, bf16)
    if first:
        run.update(perf=perf)

    total = layout.total_steps
    end = min(total, cfg.train.stop_after) if cfg.train.stop_after else total
    console = Console(first, total, start, end, bar=cfg.train.progress)
    stop, stopping = StopRequest(device), False
    memory = MemoryProbe(engine, end)
    for step in range(start + 1, end + 1):
        meter.start()
        ids = data.batch_ids(step - 1, layout.global_batch_size, dp_rank, dp_size)
        tokens, targets = data.windows(ids)
        metrics = stepper.train_step(tokens, targets, ids)
        memory.after_backward(step)
        if step == start + 1 and first:  # what this process cost to reach its first step (warm or cold start)
            run.update(first_step=since_start())
        loss = metrics["loss"]
        logged = None
        if math.isfinite(loss):
            lr = engine.get_lr()[0]
            engine.step()
            if step % cfg.train.log_every == 0 or step == end:
                logged = _train_scalars(metrics, lr, engine, meter, step, layout, device)
                writer.scalars(step, logged)
        elif cfg.train.on_nonfinite == "stop":
            console.close()
            # every rank holds the same loss (reduced over data parallel, sent down the pipeline): all stop here
            raise agreed(
                TrainingError(
                    f"non-finite training loss ({loss}) at step {step}; lower optim.lr, or "
                    f"set train.on_nonfinite=skip to drop such batches"
                )
            )
        else:
            skip_update(engine)
            writer.scalars(step, {rundir.SKIPPED: 1})
        val_loss = None
        if validator.due(step):
            val_loss = validator.run()
            writer.scalars(step, {rundir.VAL_LOSS: val_loss})
        if logged:
            console.line(_log_line(step, total, logged, val_loss, console))
        stopping = stop.agreed()
        if checkpointer.due(step, end, stopping):
            writer.flush()
            checkpointer.save(step)
        console.advance(loss, validator.last)
        if stopping:
            end = step
            break
    console.close()
    writer.close()
    memory.write(run.join(rundir.MEMORY), first)

    finished = end == total
    if finished and validator.last is None:  # resumed from the last step's checkpoint: the run was killed after it
        validator.run()  # (its val/loss event is written already; run.json needs the value)
    if finished:
        _export(cfg, layout, model, run, device)
    if first:
        status = rundir.FINISHED if finished else rundir.STOPPED
        final = {"val_loss": validator.last, "step": end} if finished else None
        run.update(
            status=status,
            step=max(end, start),
            final=final,
            export=rundir.EXPORT if finished else None,
            ended=time.time(),
        )
        how = (
            rundir.FINISHED
            if finished
            else f"{rundir.STOPPED} on a signal (resume with run.resume=true)"
            if stopping
            else rundir.STOPPED
        )
        print(
            f"{how} at step {max(end, start)}/{total}; TensorBoard logs: {run.tb}"
            + (f"; final val/loss {validator.last:.4f}" if validator.last is not None else ""),
            flush=True,
        )
    dist.barrier()


def _convert(run: RunDir, tag: str, saved: dict, key: dict) -> None:
    """Rank 0 converts the tag for the new layout (once: a finished conversion is reused) while the others wait;
    a failure is every rank's one error."""
    import torch.distributed as dist

    problem = None
    if dist.get_rank() == 0:
        began = time.time()
        try:
            where = universal.convert(run.checkpoints, tag, saved)
            print(
                f"resuming {tag} on another layout ({universal.describe(universal.layout(saved))} -> "
                f"{universal.describe(universal.layout(key))}) from its universal checkpoint {where} "
                f"({time.time() - began:.1f}s)",
                flush=True,
            )
        except checkpoint.CheckpointError as e:
            problem = str(e)
        except Exception as e:  # told to every rank, so none waits for rank 0 until the timeout
            problem = f"converting {tag} for the new layout failed ({type(e).__name__}: {str(e)[:200]})"
    found = [problem]
    dist.broadcast_object_list(found, src=0)
    if found[0]:
        raise agreed(checkpoint.CheckpointError(found[0]))


def _objective(cfg: Config, layout: Layout, device, bf16: bool):
    """Cross-entropy, or distillation by the configured teacher (loaded on the ranks that compute the loss)."""
    if not cfg.distill.teacher:
        return None
    from megatron.core import parallel_state as ps

    source = cfg.distill.teacher
    teacher = None
    if ps.is_pipeline_last_stage():
        teacher = CachedTeacher(source) if is_cache(source) else Teacher(source, device, bf16)
    group = ps.get_tensor_model_parallel_group() if layout.tp > 1 else None
    return Distill(
        teacher,
        cfg.distill.alpha,
        cfg.distill.temperature,
        layout.tokenizer_vocab,
        group=group,
        shard=ps.get_tensor_model_parallel_rank(),
    )


def _train_scalars(metrics: dict, lr: float, engine, meter, step: int, layout: Layout, device) -> dict:

    tokens_per_sec, mfu = meter.stop()
    epoch = step * layout.global_batch_size / (layout.epoch_sequences or layout.num_sequences)
    values = {
        rundir.TRAIN_LOSS: metrics["loss"],
        rundir.LR: lr,
        rundir.TOKENS_PER_SEC: tokens_per_sec,
        rundir.EPOCH: epoch,
        rundir.MFU: mfu,
        rundir.STEP_TIME: meter.seconds,
        rundir.TOKENS: step * layout.global_batch_size * layout.seq_len,
        rundir.MEMORY_GIB: memory_bytes(device) / 2**30,
    }
    values.update({k: v for k, v in metrics.items() if k != "loss"})
    grad_norm = engine.get_global_grad_norm()
    if grad_norm is not None:
        values[rundir.GRAD_NORM] = float(grad_norm)
    return values


def _log_line(step: int, total: int, values: dict, val_loss: float | None, console) -> str:

    elapsed, eta = console.eta(step)
    return log_line(
        step,
        total,
        values[rundir.TRAIN_LOSS],
        values[rundir.LR],
        values.get(rundir.GRAD_NORM),
        values[rundir.TOKENS_PER_SEC],
        values[rundir.MFU],
        round(values[rundir.MEMORY_GIB] * 2**30),
        elapsed,
        eta,
        val_loss,
    )


def _meter(cfg: Config, layout: Layout, device, bf16: bool):
    """The step meter, and run.json's "perf": what its MFU is measured against."""
    from megarecipe.train.metrics import Meter, device_peak_flops, peak_precision

    precision = peak_precision(device, bf16)
    perf = {
        "flops_per_token": flops_per_token(cfg.model, layout.vocab_size),
        "peak_precision": precision,
        "peak_flops_per_device": all_max(device_peak_flops(device, precision), device),
        "world_size": layout.world_size,
    }
    meter = Meter(
        layout.global_batch_size * layout.seq_len,
        perf["flops_per_token"],
        layout.world_size,
        perf["peak_flops_per_device"],
    )
    return meter, perf


def _remove_old_events(tb_dir: str) -> None:
    if os.path.isdir(tb_dir):
        for name in os.listdir(tb_dir):
            if name.startswith("events.out.tfevents"):
                os.remove(os.path.join(tb_dir, name))


def _export(cfg: Config, layout: Layout, model, run: RunDir, device) -> None:
    """The consolidated fp32 weights, for tools that load models without DeepSpeed."""
    from megarecipe.parallel.gather import full_state_dict

    state = full_state_dict(model, layout.zero_stage, device)
    if state is not None:
        write_export(run.export, state, cfg, layout.vocab_size, tokenizer_path=load_meta(cfg.data.dir).tokenizer_path)
