"""Run by torchrun (2 CPU processes) from test_zero_plan.py: for ZeRO 0-3, the model-state bytes the live engine
holds next to the plan's figures for this rank; and the losses of a few steps under each model.recompute."""

import json
import os
import sys

import torch

from megarecipe.config import load_config, read_ds_config
from megarecipe.plan.candidates import write_ds_json
from megarecipe.plan.memory import ZeroSetting, rank_model_states
from megarecipe.preflight import check_run


def build(overrides, first):
    cfg = load_config("configs/tiny.yaml", overrides)
    layout = check_run(cfg)
    from megarecipe.parallel import distributed

    device = distributed.init(1, 1, cfg.run.seed) if first else torch.device("cpu")
    from megarecipe.model.llama import build_model
    from megarecipe.parallel.engine import build_engine
    from megarecipe.train.step import Stepper

    torch.manual_seed(cfg.run.seed)
    model = build_model(cfg.model, layout.vocab_size)
    engine = build_engine(model, cfg, layout, False)
    return cfg, layout, engine, Stepper(engine, model, layout.seq_len, layout.micro_batch_size, device)


def main(argv: list[str] | None = None) -> int:
    from megarecipe.data.dataset import TokenDataset
    from megarecipe.parallel.memory import held_bytes

    data_dir, out, *overrides = sys.argv[1:] if argv is None else argv
    base = [*overrides, f"data.dir={data_dir}", f"run.dir={out}/run"]
    rank = int(os.environ["RANK"])
    result, first = {"bytes": {}, "losses": {}}, True
    for zero in ("zero0", "zero1", "zero2", "zero3"):
        ds = write_ds_json(zero, os.path.join(out, f"{zero}.json"))
        cfg, layout, engine, stepper = build([*base, f"parallel.ds_config={ds}"], first)
        first = False
        data = TokenDataset(cfg.data.dir, layout.seq_len, cfg.data.train_tokens, seed=cfg.run.seed)
        for step in (1, 2):
            tokens, targets = data.batch(step - 1, layout.global_batch_size, rank, 2)
            stepper.train_step(tokens, targets)
            grads = held_bytes(engine)["grads"]
            engine.step()
        held = {**held_bytes(engine), "grads": grads}
        planned = rank_model_states(
            cfg.model, layout.vocab_size, ZeroSetting.from_json(read_ds_config(ds)), 1, 1, layout.dp, False, rank
        )
        result["bytes"][zero] = {"held": held, "planned": planned}
    for recompute in ("none", "selective", "full"):
        cfg, layout, engine, stepper = build([*base, "parallel.ds_config=zero1", f"model.recompute={recompute}"], False)
        data = TokenDataset(cfg.data.dir, layout.seq_len, cfg.data.train_tokens, seed=cfg.run.seed)
        losses = []
        for step in (1, 2, 3):
            tokens, targets = data.batch(step - 1, layout.global_batch_size, rank, 2)
            losses.append(stepper.train_step(tokens, targets)["loss"])
            engine.step()
        result["losses"][recompute] = losses
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
