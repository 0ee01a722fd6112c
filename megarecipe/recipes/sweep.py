"""One locally-optimal search as training runs: coordinate descent (search.py) whose objective is a batch of
runs started through the launcher, then the centre re-run with the next seed, then the certificate.

SWEEP/<run name>/    one run directory per evaluated point, named from its hyperparameters (lr3e-3_wd0.8_ep8_s1234)
SWEEP/sweep.json     what the search is, where it stands (state, rounds, the runs of the current round)
SWEEP/certificate.json, certificate.md   at the end

Runs are started with run.resume=true and finished ones are read back (the launcher matches run.json's
settings_sha256), so a search killed and started again replays its rounds from the finished runs, resumes the
unfinished ones from their checkpoints, and trains nothing twice.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from megarecipe import atomic, rundir
from megarecipe.launch import RunSpec, launch, number, safe_name
from megarecipe.recipes import certificate
from megarecipe.recipes.search import EPOCHS, LR, STANDARD_WEIGHT_DECAY, WEIGHT_DECAY, Grid, coordinate_descent

KEYS = {"epochs": "train.epochs", "lr": "optim.lr", "weight_decay": "optim.weight_decay"}
SWEEP_JSON = "sweep.json"
SEARCHING, CERTIFYING, CERTIFIED, FAILED = "searching", "certifying", "certified", "failed"


@dataclass
class Launching:
    """How runs are started: the launcher's arguments."""

    backend: str = "local"
    parallel: int = 1
    retries: int = 1
    processes: int = 1
    slurm_args: list = field(default_factory=list)
    retry_failed: bool = False  # runs an earlier call marked failed are tried again (else read back)
    gpus_per_node: int = 8  # Slurm: a run of more processes takes whole nodes of this many


def paper_grid(standard: bool = False, epochs=None, lr=None, weight_decay=None) -> Grid:
    """The paper's grids, each replaceable; the standard recipe fixes weight decay at 0.1."""
    wd = (STANDARD_WEIGHT_DECAY,) if standard else tuple(weight_decay or WEIGHT_DECAY)
    return Grid(("epochs", "lr", "weight_decay"), (tuple(int(e) for e in (epochs or EPOCHS)), tuple(lr or LR), wd))


def run_name(values: dict, seed: int) -> str:
    return safe_name(f"lr{number(values['lr'])}_wd{number(values['weight_decay'])}_ep{int(values['epochs'])}_s{seed}")


class Sweep:
    def __init__(
        self,
        config: str,
        out: str,
        overrides: list[str],
        grid: Grid,
        how: Launching | None = None,
        log=print,
        title: str = "",
        seed_early: bool = False,
    ):
        from megarecipe.config import load_config
        from megarecipe.preflight import check_run

        self.config, self.out, self.overrides, self.grid = config, out, list(overrides), grid
        self.how, self.log, self.title = how or Launching(), log, title or os.path.basename(os.path.normpath(out))
        self.cfg = load_config(config, self.overrides)
        # bad settings: one line, before any run (judged for Slurm's GPU nodes, not this login node)
        check_run(self.cfg, world_size=self.how.processes, cuda=True if self.how.backend == "slurm" else None)
        self.seed = self.cfg.run.seed
        self.rounds: list[dict] = []
        self.seed_early = seed_early  # re-run each round's centre with the next seed alongside its neighbours
        self.centre: dict = {}

    def config_values(self) -> dict:
        c = self.cfg
        return {"epochs": c.train.epochs, "lr": c.optim.lr, "weight_decay": c.optim.weight_decay}

    def spec(self, values: dict, seed: int) -> RunSpec:
        hp = [f"{KEYS[n]}={int(v) if n == 'epochs' else repr(float(v))}" for n, v in values.items()]
        return RunSpec(
            self.config,
            [*self.overrides, *hp, f"run.seed={seed}"],
            os.path.join(self.out, run_name(values, seed)),
            self.how.processes,
        )

    def launch(self, specs: list[RunSpec]) -> dict:
        h = self.how
        return launch(
            specs,
            backend=h.backend,
            parallel=h.parallel,
            retries=h.retries,
            on_done=self.progress,
            slurm_args=h.slurm_args,
            retry_failed=h.retry_failed,
            gpus_per_node=h.gpus_per_node,
        )

    def progress(self, r) -> None:
        loss = "" if r.val_loss is None else f"  val/loss {r.val_loss:.4f}"
        how = "read back" if r.reused else f"{r.seconds:.1f} s"
        self.log(f"[{self.title}] {r.state:9s} {r.name}{loss}  ({how})")
        if r.state != rundir.FINISHED and not r.reused and r.log_tail:
            self.log("  " + "\n  ".join(r.log_tail.splitlines()[-5:]))

    def evaluate(self, points: list[dict]) -> list:
        specs = [self.spec(p, self.seed) for p in points]
        extra = [self.spec(self.centre, self.seed + 1)] if self.seed_early else []
        self.save(SEARCHING, pending=[s.name for s in specs + extra])
        results = self.launch(specs + extra)
        return [results[s.run_dir].val_loss for s in specs]

    def on_round(self, r) -> None:
        self.centre = self.grid.at(r.best)
        self.rounds.append(
            {
                "centre": self.grid.at(r.centre),
                "best": self.grid.at(r.best),
                "runs": [run_name(self.grid.at(p), self.seed) for p in r.losses],
            }
        )
        self.save(SEARCHING)

    def save(self, state: str, pending=(), **extra) -> None:
        os.makedirs(self.out, exist_ok=True)
        atomic.write_json(
            os.path.join(self.out, SWEEP_JSON),
            {
                "config": self.config,
                "overrides": self.overrides,
                "seed": self.seed,
                "state": state,
                "grid": {n: list(v) for n, v in zip(self.grid.names, self.grid.values, strict=True)},
                "rounds": self.rounds,
                "pending": list(pending),
                "updated": time.time(),
                **extra,
            },
        )

    def run(self, start: dict | None = None) -> dict:
        """Search from `start` (values; default: the config's, snapped to the grid); returns the certificate."""
        point = self.grid.snap(start or self.config_values())
        self.centre = self.grid.at(point)
        self.log(f"[{self.title}] start at {self.grid.at(point)}")
        self.rounds = []
        try:
            result = coordinate_descent(self.grid, point, self.evaluate, on_round=self.on_round)
        except Exception as e:
            self.save(FAILED, error=str(e))
            raise
        seed_spec = self.spec(result.values, self.seed + 1)
        self.save(CERTIFYING, pending=[seed_spec.name])
        seed_result = self.launch([seed_spec])[seed_spec.run_dir]
        names = {p: run_name(self.grid.at(p), self.seed) for p in result.evaluated}
        seed_run = {"seed": self.seed + 1, "run": seed_spec.name, "loss": seed_result.val_loss}
        runs = len(result.evaluated) + (len(result.rounds) if self.seed_early else 1)
        cert = certificate.build(result, names, seed_run, runs)
        cert.update(config=self.config, overrides=self.overrides, run_dir=os.path.join(self.out, cert["run"]))
        certificate.write(self.out, cert, self.title)
        self.save(CERTIFIED, optimum=cert["centre"], loss=cert["loss"], run_dir=cert["run_dir"])
        self.log(
            f"[{self.title}] certified {cert['centre']} val/loss {cert['loss']:.4f} "
            f"({cert['runs']} runs; {os.path.join(self.out, certificate.CERTIFICATE_MD)})"
        )
        return cert
