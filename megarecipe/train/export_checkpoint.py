"""A checkpoint of a stopped or running run as an export (RUN/export's format), whatever its layout.

  torchrun --nproc_per_node WORLD_SIZE -m megarecipe.train.export_checkpoint RUN TAG OUT

Run with the run's own world size (tools/export_hf.py --tag does this): each rank builds its shard of the model
under DeepSpeed as training did, loads the tag's weights (fp32 master copies too) and the ranks assemble the
full fp32 state dict as a finished run's export does. Nothing in RUN is written.
"""

from __future__ import annotations

import sys

from megarecipe.rundir import RunDir


def export_checkpoint(run_path: str, tag: str, out: str) -> None:
    import torch.distributed as dist

    from megarecipe.config import load_config, resolve_kernels
    from megarecipe.data.meta import load_meta
    from megarecipe.model.export import write_export
    from megarecipe.model.llama import build_model
    from megarecipe.parallel import distributed
    from megarecipe.parallel.engine import build_engine
    from megarecipe.parallel.gather import full_state_dict
    from megarecipe.preflight import check_run

    run = RunDir(run_path)
    cfg = load_config(run.config)
    layout = check_run(cfg)
    info = run.info() or {}
    device = distributed.init(layout.tp, layout.pp, cfg.run.seed)
    # as the run trained: its recorded precision and kernels, not this machine's defaults
    recorded = (info.get("perf") or {}).get("peak_precision")
    if cfg.train.precision == "auto":
        bf16 = recorded == "bf16" if recorded else device.type == "cuda"
    else:
        bf16 = cfg.train.precision == "bf16"
    kernels = info.get("kernels") or resolve_kernels(cfg.model.kernels, device.type == "cuda")
    model = build_model(cfg.model, layout.vocab_size, bf16=bf16, kernels=kernels)
    engine = build_engine(model, cfg, layout, bf16)
    engine.load_checkpoint(run.checkpoints, tag=tag, load_lr_scheduler_states=False)
    state = full_state_dict(model, layout.zero_stage, device)
    if state is not None:
        write_export(out, state, cfg, layout.vocab_size, tokenizer_path=load_meta(cfg.data.dir).tokenizer_path)
    dist.barrier()
    distributed.shutdown()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    export_checkpoint(*argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
