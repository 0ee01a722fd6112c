"""The whole recipe, stage by stage, from a recipe file (recipe_file.py):

  data -> standard (WD fixed; every size at every budget) -> regularized (every size at its budgets) ->
  ensembles (K = 1..n per size and budget; members shifted from the regularized settings, or the best of the box
  around the shift) -> distill (sequence-level: teachers sample, students train on real + synthetic; logit KD
  beside it) -> downstream (best single, ensemble, student) -> fits and report (megarecipe/analysis/recipe_report.py)

A run is named by its size at the reference budget and SIZE_D<tokens> at another: OUT/standard/<name>,
OUT/regularized/<name>, OUT/ensembles/<name>/members/seed<s> (with the box: OUT/ensembles/<name>/box/<point>/...),
OUT/ensembles/<name> (ensemble.json), OUT/distill/... (recipes/distill.py), OUT/search/<section>/<name> (--search),
OUT/plan.json (which run is what), OUT/stages.json (time per stage). Runs start only through the launcher with
run.resume=true, so a finished run is read back and a killed one continues from its checkpoint: running the
pipeline again trains nothing that finished. Each stage records its wall and CPU seconds the first time it does
work.
"""

from __future__ import annotations

import os
import resource
import time
from contextlib import ExitStack
from dataclasses import asdict

from megarecipe import atomic, ensembledir, errors, rundir
from megarecipe.analysis import downstream
from megarecipe.analysis import recipe_plan as stages
from megarecipe.analysis.recipe_plan import PLAN_JSON, REPORT_MD, STAGES, STAGES_JSON, RecipePlan
from megarecipe.config import ConfigError, load_config, override, resolve_layout
from megarecipe.data.corpus import default_files
from megarecipe.data.meta import load_meta
from megarecipe.data.prepare import prepare
from megarecipe.launch import RunSpec, launch, number, state
from megarecipe.recipes import certificate, distill, members
from megarecipe.recipes.certificate import edges
from megarecipe.recipes.recipe_file import Hyper, Recipe, RecipeError, section_budgets
from megarecipe.recipes.recipe_file import hyper as certified
from megarecipe.recipes.search import Grid
from megarecipe.recipes.sweep import Launching, Sweep
from megarecipe.rundir import RunDir, RunDirError


class PipelineError(errors.RunError):
    """A stage could not finish (a run failed, a fit is impossible); one line."""


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Pipeline:
    def __init__(self, recipe: Recipe, out: str, search: bool = False, log=print, stop_after: str | None = None):
        self.r, self.out, self.search, self.log, self.stop_after = recipe, out, search, log, stop_after
        self.sizes = {s.name: s for s in recipe.sizes}
        self.plan = RecipePlan.from_dict(self._read(PLAN_JSON))
        if not search:  # an earlier --search call's values: this call uses the recipe's certified ones
            self.plan.hyper = {}
        self.plan.untuned = {}  # flagged again by this call's hyper() as it finds them
        self.stages = self._read(STAGES_JSON)
        self.started_runs = 0
        self.worked = False
        self._seed0: dict = {}  # size -> its config's run.seed, before the recipe's seed shift

    # ---- bookkeeping
    def _hold(self, stack: ExitStack) -> None:
        """One pipeline at a time on OUT: a second would score, evaluate and time the same stages again."""
        try:
            stack.enter_context(RunDir(self.out).hold())
        except RunDirError as e:
            raise PipelineError(str(e).replace("choose another run.dir", "choose another --out")) from None

    def _read(self, name: str) -> dict:
        """plan.json or stages.json; what is unreadable or of the wrong shape is dropped (the stages rebuild the
        plan from the finished runs, and a lost timing is only a timing)."""
        return {k: v for k, v in atomic.read_json(os.path.join(self.out, name)).items() if isinstance(v, dict)}

    def _save(self) -> None:
        os.makedirs(self.out, exist_ok=True)
        atomic.write_json(os.path.join(self.out, PLAN_JSON), self.plan.to_dict())
        atomic.write_json(os.path.join(self.out, STAGES_JSON), self.stages)

    def _stage(self, name: str, fn) -> None:
        t0, c0, runs0 = time.time(), _cpu(), self.started_runs
        self.worked = False
        self.log(f"== {name} ==")
        try:
            fn()
        finally:  # however the call ends: finished, a failed run, or stopped by SIGTERM or Ctrl-C
            took = {
                "wall_s": round(time.time() - t0, 1),
                "cpu_s": round(_cpu() - c0, 1),
                "runs_started": self.started_runs - runs0,
                "did_work": self.worked,
            }
            # the calls that did work add up (a stage killed and resumed counts both parts); reading back adds
            # nothing
            old = self.stages.get(name)
            if old is None or not old.get("did_work"):
                self.stages[name] = took
            elif self.worked:
                self.stages[name] = {k: round(old[k] + took[k], 1) for k in ("wall_s", "cpu_s", "runs_started")}
                self.stages[name]["did_work"] = True
            self.stages.setdefault("last_call", {})[name] = took
            self._save()

    # ---- runs
    def config_of(self, size: str) -> str:
        return self.sizes[size].config or self.r.base

    def overrides(self, size: str, hp: Hyper | None, budget: int | None = None, seed: int | None = None) -> list:
        d = self.r.data
        ov = [
            *self.r.overrides,
            override("data.dir", d.dir),
            f"data.val_tokens={d.eval_tokens}",
            f"data.train_tokens={budget or self.r.budget}",
            *self.sizes[size].overrides,
        ]
        if hp is not None:
            ov += [f"optim.lr={hp.lr!r}", f"optim.weight_decay={hp.weight_decay!r}", f"train.epochs={hp.epochs}"]
        if seed is None and self.r.seed:  # the recipe's seed shifts every run's seed (members count from it)
            seed = self.base_seed(size, ov) + self.r.seed
        if seed is not None:
            ov.append(f"run.seed={seed}")
        return ov

    def base_seed(self, size: str, ov: list) -> int:
        """The size's run.seed from its config and the recipe's overrides, before the recipe's seed shift."""
        if size not in self._seed0:
            from megarecipe.config import load_config

            self._seed0[size] = load_config(self.config_of(size), ov).run.seed
        return self._seed0[size]

    def spec(
        self,
        size: str,
        hp: Hyper,
        run_dir: str,
        budget: int | None = None,
        seed: int | None = None,
        extra: list | None = None,
    ) -> RunSpec:
        return RunSpec(
            self.config_of(size),
            [*self.overrides(size, hp, budget, seed), *(extra or [])],
            run_dir,
            self.r.launch.processes,
        )

    def run_all(self, specs: list[RunSpec]) -> dict:

        todo = [s for s in specs if state(s.run_dir) != rundir.FINISHED]
        self.log(f"{len(specs)} runs: {len(specs) - len(todo)} finished before, {len(todo)} to train")
        la = self.r.launch
        self.worked |= bool(todo)  # so a call stopped mid-launch still counts its time
        results = launch(
            specs,
            backend=la.backend,
            parallel=la.parallel,
            slurm_args=list(la.slurm_args),
            on_done=self._done,
            retry_failed=True,
        )
        self.started_runs += sum(r.attempts > 0 for r in results.values())
        self.worked |= any(r.attempts > 0 for r in results.values())
        bad = [r for r in results.values() if r.state != rundir.FINISHED]
        if bad:
            raise PipelineError(
                f"{bad[0].run_dir} ended {bad[0].state}: {bad[0].error or 'see its train.log'}; "
                f"run the recipe again to resume it"
            )
        return results

    def error(self, message: str) -> PipelineError:
        return PipelineError(message)

    def _done(self, r) -> None:
        how = "read back" if r.reused else f"{r.seconds:.0f} s"
        loss = f"{r.val_loss:.4f}" if r.val_loss is not None else r.state
        self.log(f"  {os.path.relpath(r.run_dir, self.out)}: val/loss {loss} ({how})")

    # ---- hyperparameters per (size, budget)
    def key(self, size: str, budget: int) -> str:
        """A run's name within its recipe: the size at the reference budget, SIZE_D<tokens> at another."""
        return size if budget == self.r.budget else f"{size}_D{budget}"

    def budgets(self, section: str) -> list[int]:
        return section_budgets(self.r, section)

    def hyper(self, section: str, size: str, budget: int | None = None) -> Hyper:
        budget = self.r.budget if budget is None else budget
        found = self.plan.hyper.get(section, {}).get(self.key(size, budget))
        if found:
            return Hyper(**found)
        hp = certified(self.r, section, size, budget)
        if hp is None and budget != self.r.budget and getattr(self.r, section).untuned_from_reference:
            hp = certified(self.r, section, size)
            if hp is not None:  # the report flags it: these values were not searched at this budget
                self.plan.untuned.setdefault(section, {})[self.key(size, budget)] = True
        if hp is None:
            where = (
                f"{section}.certified.{size}" if budget == self.r.budget else f"{section}.certified_at.{budget}.{size}"
            )
            raise RecipeError(f"{where}: missing; add certified values or pass --search")
        return hp

    def check_settings(self) -> None:
        """Every size's run settings (and certified values), before the first stage: a bad one found by a later
        stage would stop the pipeline hours in. The data dir is read later, once it is prepared."""
        cuda = True if self.r.launch.backend == "slurm" else None  # Slurm: judged for the GPU nodes
        for size in self.sizes:
            for section in ("standard", "regularized"):
                hp = None if self.search else self.hyper(section, size)
                try:
                    cfg = load_config(self.config_of(size), self.overrides(size, hp))
                    resolve_layout(cfg, world_size=self.r.launch.processes, cuda=cuda)
                except ConfigError as e:
                    raise RecipeError(f"sizes {size} ({section} run): {e}") from None

    def grid(self, section: str):

        sec = getattr(self.r, section)
        wds = [self.r.standard_weight_decay] if section == "standard" else sorted(set(sec.weight_decay))
        return Grid(
            ("epochs", "lr", "weight_decay"), (tuple(sorted(set(sec.epochs))), tuple(sorted(set(sec.lr))), tuple(wds))
        )

    def _edge(self, section: str, size: str, budget: int, hp: Hyper) -> None:
        """Where a (size, budget)'s values sit on its grid's edge: the report flags them."""
        g = self.grid(section)
        found = edges(asdict(hp), {n: list(v) for n, v in zip(g.names, g.values, strict=True)})
        self.plan.edges.setdefault(section, {})[self.key(size, budget)] = found

    # ---- stages
    def stage_data(self) -> None:
        d = self.r.data
        if os.path.isfile(os.path.join(d.dir, "meta.json")):
            have = load_meta(d.dir).vocab_size
            if not d.tokenizer and have != d.vocab_size:  # REPORT.md states the recipe's vocabulary
                raise PipelineError(
                    f"data.dir {d.dir} was prepared with a vocabulary of {have}, the recipe asks for "
                    f"{d.vocab_size}; set data.vocab_size={have}, or give another data.dir to prepare"
                )
            self.log(f"{d.dir} is prepared")
            return

        inputs = list(d.inputs) or default_files()
        self.worked = True
        meta = prepare(
            inputs, d.dir, vocab_size=d.vocab_size, val_tokens=d.val_tokens, tokenizer=d.tokenizer, progress=False
        )
        self.log(f"{d.dir}: {meta.train_tokens:,} train + {meta.val_tokens:,} val tokens, vocab {meta.vocab_size}")

    def _search(self, section: str) -> None:
        """A locally optimal search for every (size, budget) pair of the section, each size starting from the
        previous size's optimum at the same budget; a centre that is not certified stops the pipeline."""
        la = self.r.launch
        grid = self.grid(section)
        how = Launching(
            backend=la.backend,
            parallel=la.parallel,
            processes=la.processes,
            slurm_args=list(la.slurm_args),
            retry_failed=True,
        )
        for budget in self.budgets(section):
            start = None
            for size in self.sizes:
                key = self.key(size, budget)
                cert_hp = certified(self.r, section, size, budget) or certified(self.r, section, size)
                first = start or (asdict(cert_hp) if cert_hp else None)
                sweep = Sweep(
                    self.config_of(size),
                    os.path.join(self.out, "search", section, key),
                    self.overrides(size, None, budget),
                    grid,
                    how,
                    self.log,
                    title=f"{section}/{key}",
                )
                cert = sweep.run(first)
                if not cert["certified"]:
                    bad = cert.get(certificate.FAILED) or [
                        n["run"] for n in cert["neighbours"] if n["loss"] is not None and n["margin"] < 0
                    ]
                    raise PipelineError(
                        f"search/{section}/{key}: the centre is not certified ({', '.join(bad)} "
                        f"failed or beat it); see its certificate.md and run the recipe again"
                    )
                start = cert["centre"]
                self.plan.hyper.setdefault(section, {})[key] = {
                    "lr": float(start["lr"]),
                    "weight_decay": float(start["weight_decay"]),
                    "epochs": int(start["epochs"]),
                }
                self.plan.searched.setdefault(section, {})[key] = os.path.abspath(cert["run_dir"])
                self._save()

    def _runs(self, section: str, reuse=None) -> None:
        """One run per (size, budget) of the section, into plan.by_budget[budget][section]."""
        specs = []
        for budget in self.budgets(section):
            runs = {}
            for size in self.sizes:
                key, hp = self.key(size, budget), self.hyper(section, size, budget)
                self._edge(section, size, budget, hp)
                run_dir = self.plan.searched.get(section, {}).get(key) if self.search else None
                if not run_dir and reuse:
                    run_dir = reuse(size, budget, hp)
                if not run_dir:
                    run_dir = os.path.join(self.out, section, key)
                    specs.append(self.spec(size, hp, run_dir, budget=budget))
                runs[size] = os.path.abspath(run_dir)
            self.plan.by_budget.setdefault(str(budget), {})[section] = runs
        self._keep_own(section, section)
        setattr(self.plan, section, self.plan.by_budget[str(self.r.budget)][section])
        self._save()
        self.run_all(specs)

    def _keep_own(self, section: str, name: str) -> None:
        """plan.by_budget at this recipe's budgets only, and `name` (the section's runs) only at the section's:
        another recipe's (or an earlier call's) runs in OUT are not fitted."""
        own = {str(b) for b in self.budgets(section)}
        bb = self.plan.by_budget
        self.plan.by_budget = {b: v for b, v in bb.items() if int(b) in section_budgets(self.r, "standard")}
        for b, v in self.plan.by_budget.items():
            if b not in own:
                v.pop(name, None)

    def stage_standard(self) -> None:
        if self.search:
            self._search("standard")
        self._runs("standard")

    def stage_regularized(self) -> None:
        if self.search:
            self._search("regularized")

        def same_as_standard(size, budget, hp):
            if hp == self.hyper("standard", size, budget):  # the same settings and seed: that run, not a copy
                self.log(f"  regularized/{self.key(size, budget)}: the same settings as its standard run; reused")
                return self.plan.by_budget[str(budget)]["standard"][size]
            return None

        self._runs("regularized", same_as_standard)

    def member_candidates(self, size: str, budget: int) -> list[Hyper]:
        """The members' settings to train: the regularized run's, its shift, or the box around the shift."""
        e, hp = self.r.ensemble, self.hyper("regularized", size, budget)
        if not e.member_shift:
            return [hp]
        if not e.member_box:
            return [members.shift(hp)]
        reg = self.r.regularized
        return members.box(hp, list(reg.epochs), list(reg.weight_decay))

    def member_runs(self, size: str, budget: int, hp: Hyper, ens_dir: str, count: int | None = None):
        """Members 1..count of one setting. Without the shift member 1 is the regularized run (same settings,
        its seed); with it every member is trained."""
        count = count or self.r.ensemble.members
        seed0 = load_config(self.config_of(size), self.overrides(size, hp, budget)).run.seed
        runs, specs = [], []
        if hp == self.hyper("regularized", size, budget):
            runs.append(self.plan.by_budget[str(budget)]["regularized"][size])
        for k in range(len(runs), count):
            run_dir = os.path.join(ens_dir, "members", f"seed{seed0 + k}")
            specs.append(self.spec(size, hp, run_dir, budget=budget, seed=seed0 + k))
            runs.append(os.path.abspath(run_dir))
        return runs, specs

    def _ens_dir(self, size: str, budget: int, hp: Hyper, box: bool) -> str:
        d = os.path.join(self.out, "ensembles", self.key(size, budget))
        if box:
            d = os.path.join(d, "box", f"ep{hp.epochs}_wd{number(hp.weight_decay)}")
        return os.path.abspath(d)

    def threads(self) -> int:
        """torch's CPU threads for the work this process does itself (scoring) and for each of the jobs it
        starts beside the launcher's runs (sampling): the share of one of `launch.parallel` runs."""
        from megarecipe.launch.pool import threads_per_rank

        return threads_per_rank(self.r.launch.parallel, 1)

    def _score(self, runs: list[str], ens_dir: str, scored: str | None = None) -> list[float]:
        """Loss(K) of the runs into ens_dir, scored here unless ens_dir has it, or `scored` (an ensemble dir
        of the same first members, unchanged) does: then ens_dir is written from its losses."""
        from megarecipe.analysis.heldout import (
            evaluate_ensemble,
            read_members,
            scored_prefix,
            weights_identity,
            write_result,
        )

        have = ensembledir.read(ens_dir)
        if have.get("members") == runs and have.get("weights") == weights_identity(runs):
            return have["val_loss_by_k"]
        self.worked = True
        losses = scored_prefix(runs, scored) if scored and os.path.abspath(scored) != ens_dir else None
        if losses is not None:
            write_result(ens_dir, read_members(runs), losses)
            how = f" (scored in {os.path.relpath(scored, self.out)})"
        else:
            losses, how = evaluate_ensemble(runs, ens_dir, threads=self.threads()), ""
        self.log(
            f"  {os.path.relpath(ens_dir, self.out)}: K = 1..{len(losses)}: "
            + " ".join(f"{v:.4f}" for v in losses)
            + how
        )
        return losses

    def stage_ensembles(self) -> None:
        box = self.r.ensemble.member_shift and self.r.ensemble.member_box
        todo, specs = [], []
        for budget in self.budgets("ensemble"):
            for size in self.r.ensemble.sizes:
                for hp in self.member_candidates(size, budget):
                    ens_dir = self._ens_dir(size, budget, hp, box)
                    runs, new = self.member_runs(size, budget, hp, ens_dir)
                    todo.append((budget, size, hp, ens_dir, runs))
                    specs += new
        self.run_all(specs)
        chosen: dict = {}
        for budget, size, hp, ens_dir, runs in todo:
            losses = self._score(runs, ens_dir)
            chosen.setdefault((budget, size), []).append((hp, ens_dir, losses))
        self.plan.member_box, self.plan.ensemble_hyper = {}, {}
        for budget in self.budgets("ensemble"):
            self.plan.by_budget.setdefault(str(budget), {})["ensembles"] = {}
        self._keep_own("ensemble", "ensembles")
        for (budget, size), points in chosen.items():
            i = members.best([p[2] for p in points])
            self.plan.by_budget[str(budget)]["ensembles"][size] = points[i][1]
            self.plan.ensemble_hyper[self.key(size, budget)] = asdict(points[i][0])
            if len(points) > 1:
                self.plan.member_box[self.key(size, budget)] = {
                    "points": [
                        {**asdict(hp), "dir": d, "val_loss_by_k": v, "k_asymptote": members.k_asymptote(v)}
                        for hp, d, v in points
                    ],
                    "chosen": i,
                }
        self.plan.ensembles = self.plan.by_budget[str(self.r.budget)]["ensembles"]
        self._save()

    def best_ensemble(self) -> str:
        def last(d):
            return ensembledir.read(d)["val_loss_by_k"][-1]

        return min(self.plan.ensembles.values(), key=last)

    def stage_distill(self) -> None:

        distill.run(self)

    def downstream_models(self) -> dict:
        singles = [*self.plan.standard.values(), *self.plan.regularized.values()]
        best = min(singles, key=lambda d: RunDir(d).info()["final"]["val_loss"])
        models = {"best single": best}
        if self.plan.ensembles:
            models["ensemble"] = self.best_ensemble()
        rows = self.plan.distill.get("sequence") or []
        if rows:  # the paper's student: the best of sequence-level distillation
            models["student"] = min((r["student"] for r in rows), key=lambda d: RunDir(d).info()["final"]["val_loss"])
        return models

    def stage_downstream(self) -> None:
        from megarecipe.analysis.ensemble import torch_threads

        ds = self.r.downstream
        models = self.downstream_models()
        skipped = self.plan.downstream_skipped
        for label, path in models.items():
            have, model = downstream.read_results(path), downstream.model_identity(path)
            todo = [
                t
                for t in ds.tasks
                if (t not in have or have[t].get("limit") != ds.limit or have[t].get("model") != model)
                and skipped.get(label, {}).get(t, {}).get("limit", -1) != ds.limit
            ]
            if not todo:
                self.log(f"  {label}: evaluated before")
                continue
            self.worked = True
            for task in todo:  # one at a time: a task the model cannot score is reported, not fatal
                try:
                    with torch_threads(self.threads()):
                        output = downstream.evaluate(path, [task], limit=ds.limit, batch_size=ds.batch_size)
                except ValueError as e:
                    skipped.setdefault(label, {})[task] = {"limit": ds.limit, "why": str(e).splitlines()[0]}
                    self.log(f"  {label}: {task} not scored: {e}")
                    continue
                stored = downstream.write_results(path, output, limit=ds.limit)
                self.log(
                    f"  {label} ({os.path.relpath(path, self.out)}): {task} acc "
                    f"{stored[task].get('acc', float('nan')):.3f}"
                )
        self.plan.downstream = models
        self._save()

    def stage_report(self) -> None:
        from megarecipe.analysis import recipe_report

        self.worked = True
        path = recipe_report.write(self.out, self.r, self.plan, self.stages)
        self.log(f"report: {path}")

    STAGES = STAGES

    def run(self) -> str:
        fns = dict(
            zip(
                STAGES,
                (
                    self.stage_data,
                    self.stage_standard,
                    self.stage_regularized,
                    self.stage_ensembles,
                    self.stage_distill,
                    self.stage_downstream,
                    self.stage_report,
                ),
                strict=True,
            )
        )
        skip = set()
        if not self.r.ensemble.sizes:
            skip.add(stages.ENSEMBLES)
        if not self.r.distill.student or not self.r.distill.teachers:
            skip.add(stages.DISTILL)
        if not self.r.downstream.tasks:
            skip.add(stages.DOWNSTREAM)
        t0 = time.time()
        self.check_settings()
        with ExitStack() as stack:
            self._hold(stack)
            for name in self.STAGES:
                if name in skip:
                    continue
                self._stage(name, fns[name])
                if name == self.stop_after:
                    break
        self.log(f"done in {time.time() - t0:.0f} s wall; {self.started_runs} trainer starts this call")
        return os.path.join(self.out, REPORT_MD)
