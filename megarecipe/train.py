"""Training entry point: config -> validation -> distributed init -> model and engine -> loop.

    python -m megarecipe.train configs/tiny.yaml run.dir=runs/x optim.weight_decay=0.8
    deepspeed --num_gpus 2 --module megarecipe.train configs/tiny.yaml run.dir=runs/x
"""
from __future__ import annotations

import math
import os
import socket
import sys
import time
import warnings

warnings.filterwarnings("ignore", message=".*(Transformer Engine|Apex).*")

from megarecipe.config import Config, ConfigError, Layout, load_config, save_config, to_yaml, validate  # noqa: E402
from megarecipe.data.errors import DataError  # noqa: E402


class TrainingError(RuntimeError):
    """The run cannot go on (a non-finite loss, say); the message names the step and the fix."""


def parse_args(argv: list[str]) -> tuple[str | None, list[str]]:
    """A YAML path and key=value overrides; DeepSpeed's launcher adds --local_rank, which is dropped."""
    path, overrides, skip = None, [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg.startswith("--local_rank"):
            skip = "=" not in arg
        elif arg in ("-h", "--help"):
            print(__doc__)
            sys.exit(0)
        elif arg.endswith((".yaml", ".yml")) and "=" not in arg and path is None:
            path = arg
        elif arg.startswith("-"):
            raise ConfigError(f"unknown option {arg!r}; pass a YAML file and key=value overrides")
        else:
            overrides.append(arg)
    return path, overrides


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _single_process_env() -> None:
    """`python -m megarecipe.train` with no launcher: a world of one."""
    if "WORLD_SIZE" in os.environ:
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def main(argv: list[str] | None = None) -> int:
    try:
        path, overrides = parse_args(sys.argv[1:] if argv is None else argv)
        cfg = load_config(path, overrides)
        layout = validate(cfg)
    except (ConfigError, DataError) as e:
        if _rank() == 0:
            print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        train(cfg, layout)
    except (TrainingError, DataError) as e:
        if _rank() == 0:
            print(f"error: {e}", file=sys.stderr)
        return 3
    return 0


def _init_distributed(cfg: Config, layout: Layout):
    import torch
    from megarecipe.parallel import cpu_compat

    _single_process_env()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        cpu_compat.apply()
        device = torch.device("cpu")
        backend = "gloo"
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    import deepspeed
    from megatron.core import parallel_state as ps, tensor_parallel

    deepspeed.init_distributed(dist_backend=backend)
    ps.initialize_model_parallel(tensor_model_parallel_size=layout.tp, pipeline_model_parallel_size=layout.pp)
    torch.manual_seed(cfg.run.seed)
    tensor_parallel.model_parallel_cuda_manual_seed(cfg.run.seed)
    return device


def _resume_facts(cfg: Config, layout: Layout) -> dict:
    """What a resumed run must share with its checkpoint: the sharding, and what fixes step s's data and LR."""
    from megarecipe.data.meta import load_meta

    return {"world_size": layout.world_size, "tp": layout.tp, "pp": layout.pp, "zero_stage": layout.zero_stage,
            "seed": cfg.run.seed, "global_batch_size": layout.global_batch_size, "seq_len": layout.seq_len,
            "num_sequences": layout.num_sequences, "total_steps": layout.total_steps,
            "tokenizer_sha256": load_meta(cfg.data.dir).tokenizer_sha256}


def _prepare_run_dir(cfg: Config, now: dict, rank: int) -> str:
    from megarecipe import checkpoint

    ckpt_dir = os.path.join(cfg.run.dir, "checkpoints")
    has_ckpt = checkpoint.latest_tag(ckpt_dir) is not None
    if has_ckpt and not cfg.run.resume:
        raise TrainingError(f"run.dir={cfg.run.dir!r} already holds a checkpoint; set run.resume=true to continue "
                            f"it or choose another run.dir")
    saved = checkpoint.saved_layout(ckpt_dir) if has_ckpt else None
    changed = {k: (v, now.get(k)) for k, v in (saved or {}).items() if now.get(k) != v}
    if changed:
        what = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items())
        raise TrainingError(f"run.dir={cfg.run.dir!r} cannot resume: {what}; resume with the settings it was "
                            f"checkpointed with (same processes, tp, pp, ZeRO stage, seed, batch and budget)")
    if rank == 0:
        os.makedirs(ckpt_dir, exist_ok=True)
        if not has_ckpt:   # a resumed run keeps the config it started with
            save_config(cfg, os.path.join(cfg.run.dir, "config.yaml"))
    return ckpt_dir


def train(cfg: Config, layout: Layout) -> None:
    import torch
    import torch.distributed as dist
    from megatron.core import parallel_state as ps
    from tqdm import tqdm

    from megarecipe import checkpoint
    from megarecipe.data.dataset import TokenDataset
    from megarecipe.loop import Stepper
    from megarecipe.metrics import Writer, device_peak_flops
    from megarecipe.model.llama import build_model, count_params, flops_per_token
    from megarecipe.parallel.engine import build_engine

    rank = _rank()
    facts = _resume_facts(cfg, layout)
    ckpt_dir = _prepare_run_dir(cfg, facts, rank)
    device = _init_distributed(cfg, layout)
    bf16 = cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and device.type == "cuda")

    model = build_model(cfg.model, layout.vocab_size, bf16=bf16)
    engine = build_engine(model, cfg, layout, bf16)
    stepper = Stepper(engine, model, layout.seq_len, layout.micro_batch_size, device)
    data = TokenDataset(cfg.data.dir, layout.seq_len, cfg.data.train_tokens, seed=cfg.run.seed)
    val = _validation_microbatches(cfg, layout, ps.get_data_parallel_rank(), ps.get_data_parallel_world_size())

    start = 0
    if cfg.run.resume and checkpoint.latest_tag(ckpt_dir):
        start = checkpoint.load(engine, ckpt_dir)
    total = layout.total_steps
    if start == 0 and rank == 0:
        _remove_old_events(os.path.join(cfg.run.dir, "tb"))
    writer = Writer(os.path.join(cfg.run.dir, "tb"), enabled=rank == 0, start_step=start + 1 if start else 0)
    params, params_non_embedding = count_params(cfg.model, layout.vocab_size)
    if start == 0:
        writer.run_facts({
            "params": params, "params_non_embedding": params_non_embedding, "train_tokens": layout.train_tokens,
            "epochs": cfg.train.epochs, "lr": cfg.optim.lr, "weight_decay": cfg.optim.weight_decay,
            "seed": cfg.run.seed, "global_batch_tokens": layout.global_batch_size * layout.seq_len,
            "total_steps": total, "world_size": layout.world_size}, to_yaml(cfg))
    peak = torch.tensor([device_peak_flops(device)], dtype=torch.float64, device=device)
    dist.all_reduce(peak)
    flops_token = flops_per_token(cfg.model, layout.vocab_size)
    batch_tokens = layout.global_batch_size * layout.seq_len

    end = min(total, cfg.train.stop_after) if cfg.train.stop_after else total
    bar = tqdm(total=total, initial=start, disable=rank != 0 or not cfg.train.progress, desc="train",
               unit="step", dynamic_ncols=True)
    last_val = None
    stop, interrupted = _StopOnSignal(device), False
    for step in range(start + 1, end + 1):
        t0 = time.perf_counter()
        tokens, targets = data.batch(step - 1, layout.global_batch_size, ps.get_data_parallel_rank(),
                                     ps.get_data_parallel_world_size())
        loss = stepper.train_step(tokens, targets, step)
        lr = engine.get_lr()[0]
        if math.isfinite(loss):
            engine.step()
            grad_norm = engine.get_global_grad_norm()
            if step % cfg.train.log_every == 0 or step == end:
                tps = batch_tokens / (time.perf_counter() - t0)
                writer.scalars(step, {
                    "train/loss": loss, "train/lr": lr, "perf/tokens_per_sec": tps,
                    "train/epoch": step * layout.global_batch_size / layout.num_sequences,
                    "perf/mfu": flops_token * tps / peak.item()})
                if grad_norm is not None:
                    writer.scalars(step, {"train/grad_norm": float(grad_norm)})
        elif cfg.train.on_nonfinite == "stop":
            bar.close()
            raise TrainingError(f"non-finite training loss ({loss}) at step {step}; lower optim.lr, or set "
                                f"train.on_nonfinite=skip to drop such batches")
        else:
            _drop_gradients(engine)
            writer.scalars(step, {"train/skipped_batches": 1})
        if step % cfg.train.eval_every == 0 or step == total:
            last_val = stepper.evaluate(val)
            writer.scalars(step, {"val/loss": last_val})
        interrupted = stop.agreed()
        save_now = step == end or interrupted or (cfg.train.checkpoint_every and step % cfg.train.checkpoint_every == 0)
        if save_now:
            writer.flush()
            checkpoint.save(engine, ckpt_dir, step, cfg.train.keep_checkpoints, facts)
        bar.set_postfix(loss=f"{loss:.3f}", **({"val": f"{last_val:.3f}"} if last_val is not None else {}))
        bar.update(1)
        if interrupted:
            end = step
            break
    bar.close()
    if end == total:
        _finish(cfg, layout, model, rank, device)
    writer.close()
    if rank == 0:
        how = "finished" if end == total else "stopped on a signal (resume with run.resume=true)" if interrupted \
            else "stopped"
        print(f"{how} at step {max(end, start)}/{total}; TensorBoard logs: "
              f"{os.path.join(cfg.run.dir, 'tb')}" + (f"; final val/loss {last_val:.4f}" if last_val is not None else ""),
              flush=True)
    dist.barrier()


class _StopOnSignal:
    """SIGTERM (a scheduler's preemption, or a launcher passing on Ctrl-C) or SIGUSR1 (Slurm's --signal) asks
    for a checkpoint at the end of the current step and a clean exit; all ranks agree on the step."""

    def __init__(self, device):
        import signal

        self.device, self.requested = device, False
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._request)

    def _request(self, signum, frame):
        self.requested = True

    def agreed(self) -> bool:
        import torch
        import torch.distributed as dist

        seen = torch.tensor([float(self.requested)], device=self.device)
        dist.all_reduce(seen, op=dist.ReduceOp.MAX)
        return bool(seen.item())


def _remove_old_events(tb_dir: str) -> None:
    """A run that starts at step 0 again (resume without a checkpoint) replaces what an aborted attempt logged."""
    if os.path.isdir(tb_dir):
        for name in os.listdir(tb_dir):
            if name.startswith("events.out.tfevents"):
                os.remove(os.path.join(tb_dir, name))


def _drop_gradients(engine) -> None:
    """Skip this step's update but keep the schedule moving. ZeRO's step() sees the non-finite gradient norm,
    discards its partitioned gradient buffers and applies nothing (zero_grad() alone would leave them to
    poison the next step); without ZeRO the plain gradients are cleared."""
    from megarecipe.parallel.engine import hooks_backward

    if hooks_backward(engine):
        engine.step()
    else:
        engine.zero_grad()
    engine.lr_scheduler.step()


def _validation_microbatches(cfg: Config, layout: Layout, dp_rank: int, dp_size: int) -> list:
    """(tokens, targets, per-token weights) for this rank. Every data-parallel rank gets the same number of
    microbatches (weight 0 marks padding), so ZeRO-3's per-forward gathers stay in step; together they
    cover the same held-out tokens for every run on the data dir."""
    from megarecipe.data.dataset import IGNORE_INDEX, validation_batches

    batches = validation_batches(cfg.data.dir, layout.seq_len, cfg.train.eval_batch_size * dp_size,
                                 max_tokens=cfg.data.val_tokens, dp_rank=dp_rank, dp_size=dp_size)
    return [(x, y.clamp(min=0), (y != IGNORE_INDEX).float()) for x, y in batches]


def _finish(cfg: Config, layout: Layout, model, rank: int, device) -> None:
    """Export the consolidated fp32 weights for tools that load models without DeepSpeed."""
    from megarecipe.data.meta import load_meta
    from megarecipe.model.export import write_export
    from megarecipe.parallel.gather import full_state_dict

    state = full_state_dict(model, layout.zero_stage, device)
    if state is not None:
        write_export(os.path.join(cfg.run.dir, "export"), state, cfg, layout.vocab_size,
                     tokenizer_path=load_meta(cfg.data.dir).tokenizer_path)


if __name__ == "__main__":
    sys.exit(main())
