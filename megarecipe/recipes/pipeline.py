"""The whole recipe, stage by stage, from a recipe file (recipe_file.py):

  data -> standard (WD fixed, every size, plus the data-law budgets) -> regularized (every size) -> ensembles
  (K = 1..n per size, member 1 the regularized run) -> distill (the best ensemble into the student) ->
  downstream (best single, ensemble, student) -> fits and report (megarecipe/analysis/recipe_report.py)

OUT/standard/<size>, OUT/standard/<size>_D<tokens>, OUT/regularized/<size>, OUT/ensembles/<size>/members/seed<s>,
OUT/ensembles/<size> (ensemble.json), OUT/distill/<student>, OUT/search/... (--search), OUT/plan.json (which run
is what), OUT/stages.json (time per stage). Runs start only through the launcher with run.resume=true, so a
finished run is read back and a killed one continues from its checkpoint: running the pipeline again trains
nothing that finished. Each stage records its wall and CPU seconds the first time it does work.
"""
from __future__ import annotations

import os
import resource
import time
from contextlib import ExitStack

from megarecipe import atomic
from megarecipe.config import override
from megarecipe.launch import RunSpec, launch
from megarecipe.recipes.recipe_file import Hyper, Recipe, RecipeError
from megarecipe.rundir import RunDir, RunDirError

PLAN_JSON, STAGES_JSON = "plan.json", "stages.json"


class PipelineError(RuntimeError):
    """A stage could not finish (a run failed, a fit is impossible); one line."""


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Pipeline:
    def __init__(self, recipe: Recipe, out: str, search: bool = False, log=print, stop_after: str | None = None):
        self.r, self.out, self.search, self.log, self.stop_after = recipe, out, search, log, stop_after
        self.sizes = {s.name: s for s in recipe.sizes}
        self.plan = self._read(PLAN_JSON)
        if not search:   # an earlier --search call's values: this call uses the recipe's certified ones
            self.plan.pop("hyper", None)
        self.stages = self._read(STAGES_JSON)
        self.started_runs = 0
        self.worked = False

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
        atomic.write_json(os.path.join(self.out, PLAN_JSON), self.plan)
        atomic.write_json(os.path.join(self.out, STAGES_JSON), self.stages)

    def _stage(self, name: str, fn) -> None:
        t0, c0, runs0 = time.time(), _cpu(), self.started_runs
        self.worked = False
        self.log(f"== {name} ==")
        try:
            fn()
        finally:   # however the call ends: finished, a failed run, or stopped by SIGTERM or Ctrl-C
            took = {"wall_s": round(time.time() - t0, 1), "cpu_s": round(_cpu() - c0, 1),
                    "runs_started": self.started_runs - runs0, "did_work": self.worked}
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
        ov = [*self.r.overrides, override("data.dir", d.dir), f"data.val_tokens={d.eval_tokens}",
              f"data.train_tokens={budget or self.r.budget}", *self.sizes[size].overrides]
        if hp is not None:
            ov += [f"optim.lr={hp.lr!r}", f"optim.weight_decay={hp.weight_decay!r}", f"train.epochs={hp.epochs}"]
        if seed is not None:
            ov.append(f"run.seed={seed}")
        return ov

    def spec(self, size: str, hp: Hyper, run_dir: str, budget: int | None = None, seed: int | None = None,
             extra: list | None = None) -> RunSpec:
        return RunSpec(self.config_of(size), [*self.overrides(size, hp, budget, seed), *(extra or [])], run_dir,
                       self.r.launch.processes)

    def run_all(self, specs: list[RunSpec]) -> dict:
        from megarecipe.launch import state

        todo = [s for s in specs if state(s.run_dir) != "finished"]
        self.log(f"{len(specs)} runs: {len(specs) - len(todo)} finished before, {len(todo)} to train")
        la = self.r.launch
        self.worked |= bool(todo)   # so a call stopped mid-launch still counts its time
        results = launch(specs, backend=la.backend, parallel=la.parallel, slurm_args=list(la.slurm_args),
                         on_done=self._done, retry_failed=True)
        self.started_runs += sum(r.attempts > 0 for r in results.values())
        self.worked |= any(r.attempts > 0 for r in results.values())
        bad = [r for r in results.values() if r.state != "finished"]
        if bad:
            raise PipelineError(f"{bad[0].run_dir} ended {bad[0].state}: {bad[0].error or 'see its train.log'}; "
                                f"run the recipe again to resume it")
        return results

    def _done(self, r) -> None:
        how = "read back" if r.reused else f"{r.seconds:.0f} s"
        loss = f"{r.val_loss:.4f}" if r.val_loss is not None else r.state
        self.log(f"  {os.path.relpath(r.run_dir, self.out)}: val/loss {loss} ({how})")

    def hyper(self, section: str, size: str) -> Hyper:
        found = self.plan.get("hyper", {}).get(section, {}).get(size)
        if found:
            return Hyper(**found)
        hp = getattr(self.r, section).certified.get(size)
        if hp is None:
            raise RecipeError(f"{section}.certified.{size}: missing; add certified values or pass --search")
        return hp

    # ---- stages
    def stage_data(self) -> None:
        d = self.r.data
        if os.path.isfile(os.path.join(d.dir, "meta.json")):
            from megarecipe.data.meta import load_meta
            have = load_meta(d.dir).vocab_size
            if not d.tokenizer and have != d.vocab_size:   # REPORT.md states the recipe's vocabulary
                raise PipelineError(f"data.dir {d.dir} was prepared with a vocabulary of {have}, the recipe asks for "
                                    f"{d.vocab_size}; set data.vocab_size={have}, or give another data.dir to prepare")
            self.log(f"{d.dir} is prepared")
            return
        from megarecipe.data.corpus import default_files
        from megarecipe.data.prepare import prepare
        inputs = list(d.inputs) or default_files()
        self.worked = True
        meta = prepare(inputs, d.dir, vocab_size=d.vocab_size, val_tokens=d.val_tokens, tokenizer=d.tokenizer,
                       progress=False)
        self.log(f"{d.dir}: {meta.train_tokens:,} train + {meta.val_tokens:,} val tokens, vocab {meta.vocab_size}")

    def _search(self, section: str) -> None:
        from megarecipe.recipes.search import Grid
        from megarecipe.recipes.sweep import Launching, Sweep

        sec, la = getattr(self.r, section), self.r.launch
        wds = [self.r.standard_weight_decay] if section == "standard" else sorted(set(sec.weight_decay))
        grid = Grid(("epochs", "lr", "weight_decay"),
                    (tuple(sorted(set(sec.epochs))), tuple(sorted(set(sec.lr))), tuple(wds)))
        how = Launching(backend=la.backend, parallel=la.parallel, processes=la.processes,
                        slurm_args=list(la.slurm_args), retry_failed=True)
        start = None
        for size in self.sizes:
            cert_hp = sec.certified.get(size)
            first = start or ({"epochs": cert_hp.epochs, "lr": cert_hp.lr, "weight_decay": cert_hp.weight_decay}
                              if cert_hp else None)
            sweep = Sweep(self.config_of(size), os.path.join(self.out, "search", section, size),
                          self.overrides(size, None), grid, how, self.log, title=f"{section}/{size}")
            cert = sweep.run(first)
            start = cert["centre"]
            self.plan.setdefault("hyper", {}).setdefault(section, {})[size] = {
                "lr": float(start["lr"]), "weight_decay": float(start["weight_decay"]), "epochs": int(start["epochs"])}
            self.plan.setdefault(section, {})[size] = os.path.abspath(cert["run_dir"])
            self._save()

    def stage_standard(self) -> None:
        if self.search:
            self._search("standard")
        specs, runs = [], {}
        for size in self.sizes:
            run_dir = self.plan.get("standard", {}).get(size) if self.search else None
            if not run_dir:
                run_dir = os.path.join(self.out, "standard", size)
                specs.append(self.spec(size, self.hyper("standard", size), run_dir))
            runs[size] = os.path.abspath(run_dir)
        self.plan["standard"] = runs   # this recipe's sizes only: another recipe's runs in OUT are not fitted
        law = self.r.data_law_size or list(self.sizes)[-1]
        self.plan["data_law"] = {"size": law, "runs": {str(self.r.budget): self.plan["standard"][law]}}
        for budget in sorted(int(b) for b in self.r.data_law_budgets):
            run_dir = os.path.join(self.out, "standard", f"{law}_D{budget}")
            specs.append(self.spec(law, self.hyper("standard", law), run_dir, budget=budget))
            self.plan["data_law"]["runs"][str(budget)] = os.path.abspath(run_dir)
        self._save()
        self.run_all(specs)

    def stage_regularized(self) -> None:
        if self.search:
            self._search("regularized")
        specs, runs = [], {}
        for size in self.sizes:
            run_dir = self.plan.get("regularized", {}).get(size) if self.search else None
            hp = self.hyper("regularized", size)
            if not run_dir and hp == self.hyper("standard", size):
                run_dir = self.plan["standard"][size]   # the same settings and seed: that run, not a copy of it
                self.log(f"  regularized/{size}: the same settings as standard/{size}; that run is used")
            if not run_dir:
                run_dir = os.path.join(self.out, "regularized", size)
                specs.append(self.spec(size, hp, run_dir))
            runs[size] = os.path.abspath(run_dir)
        self.plan["regularized"] = runs
        self._save()
        self.run_all(specs)

    def member_runs(self, size: str) -> tuple[list[str], list[RunSpec]]:
        """Member 1 is the regularized run (same settings, its seed), unless members use the paper's shift."""
        from megarecipe.config import load_config

        e, hp = self.r.ensemble, self.hyper("regularized", size)
        if e.member_shift:
            hp = Hyper(hp.lr, hp.weight_decay * 0.5, hp.epochs * 2)
        seed0 = load_config(self.config_of(size), self.overrides(size, hp)).run.seed
        runs, specs = [], []
        if not e.member_shift:
            runs.append(self.plan["regularized"][size])
        for k in range(len(runs), e.members):
            run_dir = os.path.join(self.out, "ensembles", size, "members", f"seed{seed0 + k}")
            specs.append(self.spec(size, hp, run_dir, seed=seed0 + k))
            runs.append(os.path.abspath(run_dir))
        return runs, specs

    def stage_ensembles(self) -> None:
        members, specs = {}, []
        for size in self.r.ensemble.sizes:
            members[size], new = self.member_runs(size)
            specs += new
        self.run_all(specs)
        from megarecipe.analysis.heldout import evaluate_ensemble, weights_identity

        self.plan["ensembles"] = {}
        for size, runs in members.items():
            ens_dir = os.path.abspath(os.path.join(self.out, "ensembles", size))
            have = atomic.read_json(os.path.join(ens_dir, "ensemble.json"))
            if have.get("members") != runs or have.get("weights") != weights_identity(runs):
                self.worked = True
                losses = evaluate_ensemble(runs, ens_dir)
                self.log(f"  ensembles/{size}: K = 1..{len(losses)}: " + " ".join(f"{v:.4f}" for v in losses))
            else:
                self.log(f"  ensembles/{size}: scored before")
            self.plan["ensembles"][size] = ens_dir
        self._save()

    def best_ensemble(self) -> str:
        def last(d):
            return atomic.read_json(os.path.join(d, "ensemble.json"))["val_loss_by_k"][-1]
        return min(self.plan["ensembles"].values(), key=last)

    def stage_distill(self) -> None:
        dc = self.r.distill
        teacher, student = self.best_ensemble(), dc.student
        run_dir = os.path.join(self.out, "distill", student)
        extra = [override("distill.teacher", teacher), f"distill.alpha={dc.alpha!r}",
                 f"distill.temperature={dc.temperature!r}"]
        self.run_all([self.spec(student, self.hyper("regularized", student), run_dir, extra=extra)])
        taught = ((RunDir(run_dir).info() or {}).get("distill") or {}).get("members")
        now = atomic.read_json(os.path.join(teacher, "ensemble.json")).get("members")
        if taught != now:   # the run's settings name the teacher's dir, not its members: a finished one is read back
            raise PipelineError(f"{run_dir} was distilled from {len(taught or [])} member(s) of {teacher}, which now "
                                f"has {len(now or [])}; move {run_dir} aside to distil from the ensemble as it is")
        self.plan["distill"] = {"student": os.path.abspath(run_dir), "teacher": teacher,
                                "single": self.plan["regularized"][student], "size": student}
        self._save()

    def downstream_models(self) -> dict:
        singles = [*self.plan["standard"].values(), *self.plan["regularized"].values()]
        best = min(singles, key=lambda d: RunDir(d).info()["final"]["val_loss"])
        models = {"best single": best}
        if self.plan.get("ensembles"):
            models["ensemble"] = self.best_ensemble()
        if self.plan.get("distill"):
            models["student"] = self.plan["distill"]["student"]
        return models

    def stage_downstream(self) -> None:
        from megarecipe.analysis import downstream

        ds = self.r.downstream
        models = self.downstream_models()
        skipped = self.plan.setdefault("downstream_skipped", {})
        for label, path in models.items():
            have, model = downstream.read_results(path), downstream.model_identity(path)
            todo = [t for t in ds.tasks if (t not in have or have[t].get("limit") != ds.limit
                                            or have[t].get("model") != model)
                    and skipped.get(label, {}).get(t, {}).get("limit", -1) != ds.limit]
            if not todo:
                self.log(f"  {label}: evaluated before")
                continue
            self.worked = True
            for task in todo:   # one at a time: a task the model cannot score is reported, not fatal
                try:
                    output = downstream.evaluate(path, [task], limit=ds.limit, batch_size=ds.batch_size)
                except ValueError as e:
                    skipped.setdefault(label, {})[task] = {"limit": ds.limit, "why": str(e).splitlines()[0]}
                    self.log(f"  {label}: {task} not scored: {e}")
                    continue
                stored = downstream.write_results(path, output, limit=ds.limit)
                self.log(f"  {label} ({os.path.relpath(path, self.out)}): {task} acc "
                         f"{stored[task].get('acc', float('nan')):.3f}")
        self.plan["downstream"] = models
        self._save()

    def stage_report(self) -> None:
        from megarecipe.analysis import recipe_report
        self.worked = True
        path = recipe_report.write(self.out, self.r, self.plan, self.stages)
        self.log(f"report: {path}")

    STAGES = ("data", "standard", "regularized", "ensembles", "distill", "downstream", "fits+report")

    def run(self) -> str:
        fns = {"data": self.stage_data, "standard": self.stage_standard, "regularized": self.stage_regularized,
               "ensembles": self.stage_ensembles, "distill": self.stage_distill,
               "downstream": self.stage_downstream, "fits+report": self.stage_report}
        skip = set()
        if not self.r.ensemble.sizes:
            skip |= {"ensembles", "distill"}
        if not self.r.distill.student:
            skip.add("distill")
        if not self.r.downstream.tasks:
            skip.add("downstream")
        t0 = time.time()
        with ExitStack() as stack:
            self._hold(stack)
            for name in self.STAGES:
                if name in skip:
                    continue
                self._stage(name, fns[name])
                if name == self.stop_after:
                    break
        self.log(f"done in {time.time() - t0:.0f} s wall; {self.started_runs} trainer starts this call")
        return os.path.join(self.out, "REPORT.md")
