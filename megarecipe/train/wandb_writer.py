"""Weights & Biases beside TensorBoard (logging.wandb=true): the same scalars at the same steps, and the run's
config and facts, from rank 0. Off by default; wandb is an optional dependency (pip install -e ".[wandb]").

The W&B run is named after run.dir and its id is kept in run.json, so a resumed run continues the same W&B
run. WANDB_MODE=offline (or no network) writes it under RUN/wandb/ for `wandb sync` later.
"""

from __future__ import annotations

import os
import secrets


class WandbWriter:
    def __init__(self, run, cfg, resumed: bool):
        import wandb

        self.wandb = wandb
        info = run.info() or {}
        run_id = info.get("wandb_id") if resumed else None
        run_id = run_id or secrets.token_hex(4)
        run.update(wandb_id=run_id)
        self.run = wandb.init(
            project=cfg.logging.wandb_project,
            entity=cfg.logging.wandb_entity,
            name=os.path.basename(os.path.abspath(run.path)),
            id=run_id,
            resume="allow",
            dir=run.path,
        )

    def scalars(self, step: int, values: dict) -> None:
        self.run.log({k: float(v) for k, v in values.items()}, step=step)

    def run_facts(self, facts: dict, config: dict) -> None:
        self.run.config.update({"config": config, "facts": facts}, allow_val_change=True)

    def close(self) -> None:
        self.run.finish()
