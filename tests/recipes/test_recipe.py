"""tools/recipe.py: the recipe file's checks (one line per bad field), and the whole pipeline on a sliver with the
real trainer: killed mid-stage, resumed without retraining anything that finished, re-run training nothing, and a
report whose numbers are those of its fits.json."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from megarecipe import ensembledir
from megarecipe.cli.recipe import main
from tests.helpers import REPO

SLIVER = str(REPO / "tests" / "recipes" / "sliver.yaml")


def fake_recipe(fake_data) -> list[str]:
    """Recipe overrides for the stand-in trainer's data dir (its vocabulary is 256)."""
    return [f"data.dir={fake_data}", "data.vocab_size=256"]


def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: "), err
    return err


def test_bad_fields_are_one_line(capsys, tmp_path):
    out = str(tmp_path / "out")
    assert "budgett" in _one_line_error(capsys, [SLIVER, "budgett=3", "--out", out])
    assert "launch.parallel" in _one_line_error(capsys, [SLIVER, "launch.parallel=two", "--out", out])
    assert "distill.student" in _one_line_error(capsys, [SLIVER, "distill.student=zz", "--out", out])
    bad = tmp_path / "bad.yaml"
    bad.write_text(open(SLIVER).read().replace("{name: a, overrides", "{name: a, hidden: 3, overrides"))
    assert "sizes[0].hidden" in _one_line_error(capsys, [str(bad), "--out", out])
    bad.write_text(open(SLIVER).read().replace("a: {lr: 1.0e-2, epochs: 2}", "a: {lr: fast, epochs: 2}"))
    assert "standard.certified.a" in _one_line_error(capsys, [str(bad), "--out", out])
    assert "downstream.limit" in _one_line_error(capsys, [SLIVER, "downstream.limit=0", "--out", out])
    assert "ensemble.sizes: a size is listed twice" in _one_line_error(
        capsys, [SLIVER, "ensemble.sizes=[b,b]", "--out", out]
    )
    assert "budgets: a budget is listed twice" in _one_line_error(capsys, [SLIVER, "budgets=[4096,4096]", "--out", out])
    assert not os.path.exists(out)  # nothing started


def _command(out, data):
    return [
        sys.executable,
        str(REPO / "tools" / "recipe.py"),
        SLIVER,
        "--out",
        out,
        f"data.dir={data}",
        "data.vocab_size=2000",
        "data.val_tokens=20000",
    ]


def _env():
    return {**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1"}


def _run_logs(out) -> dict:
    return {p: open(p).read() for p in glob.glob(os.path.join(out, "**", "train.log"), recursive=True)}


def _finished(out) -> set:
    done = set()
    for p in glob.glob(os.path.join(out, "**", "run.json"), recursive=True):
        with open(p) as f:
            info = json.load(f)
        if info.get("status") == "finished" and info.get("kind") != "ensemble":
            done.add(os.path.dirname(p))
    return done


@pytest.mark.slow
def test_sliver_killed_resumed_and_reported(tmp_path, tiny_data, capsys, monkeypatch):
    """The first call is the command a user types, killed with SIGKILL; the resumed and the repeated call run
    in this process (their runs start from the session's warm server), as the same tool."""
    out = str(tmp_path / "sliver")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    tool = subprocess.Popen(
        _command(out, tiny_data),
        cwd=REPO,
        env=_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while not glob.glob(os.path.join(out, "regularized", "*", "train.log")):  # mid-stage: a regularized run is up
        assert tool.poll() is None and time.time() < deadline, "the pipeline ended before the regularized stage"
        time.sleep(0.5)
    os.killpg(tool.pid, signal.SIGKILL)
    tool.wait()
    before, logs = _finished(out), _run_logs(out)
    assert len(before) >= 2  # the standard stage's runs

    capsys.readouterr()
    assert main(_command(out, tiny_data)[2:]) == 0, capsys.readouterr().err[-2000:]
    for run in before:  # finished before the kill: read back, never started again
        log = os.path.join(run, "train.log")
        assert open(log).read() == logs[log], run
    runs = _finished(out)
    # standard at 2 budgets, regularized, 2 shifted members, the teacher's third, 2 sequence-level students and
    # the logit-KD one
    assert len(runs) == 2 * 2 + 2 + 2 + 1 + 3
    assert len(ensembledir.read(os.path.join(out, "distill", "teachers", "ensemble"))["members"]) == 3
    assert os.path.isfile(os.path.join(out, "distill", "synthetic", "ensemble", "meta.json"))

    logs = _run_logs(out)
    capsys.readouterr()
    assert main(_command(out, tiny_data)[2:]) == 0
    assert "0 trainer starts this call" in capsys.readouterr().out
    assert _run_logs(out) == logs

    report = open(os.path.join(out, "REPORT.md")).read()
    with open(os.path.join(out, "fits.json")) as f:
        fits = json.load(f)
    for section in ("standard", "regularized"):
        for row in fits["runs"][section].values():
            assert f"{row['val_loss']:.4f}" in report
    assert sorted(fits["by_budget"]) == ["1024", "2048"] and "best_standard" in fits["by_budget"]["1024"]
    for e in fits["by_budget"]["2048"]["ensembles"]["by_size"].values():
        assert " | ".join(f"{v:.4f}" for v in e["val_loss_by_k"]) in report
    d = fits["distill"]
    assert f"{d['single_loss']:.4f}" in report and {r["teacher"] for r in d["sequence"]} == {"ensemble", "self"}
    for r in [*d["sequence"], d["logit_kd"]]:
        assert f"{r['teacher_loss']:.4f} | {r['student_loss']:.4f} |" in report
    if d["paper_experiment"]["retained"] is not None:
        assert f"{d['paper_experiment']['retained']:.3f}" in report
    for o in fits["orderings"]:
        assert f"**{o['verdict']}**" in report
    assert "sciq" in report and set(fits["downstream"]) == {"best single", "ensemble", "student"}
    stages = json.load(open(os.path.join(out, "stages.json")))
    for name in ("standard", "regularized", "ensembles", "distill"):
        assert f"| {name} | {stages[name]['wall_s']:.0f} | {stages[name]['cpu_s']:.0f} |" in report


def test_a_second_recipe_in_the_same_out_fits_only_its_own_runs(tmp_path, fake_data, fake_trainer):
    """Recipe A (sizes a, b) then recipe B (sizes a, c) in one --out: B's plan, which its fits and "best single"
    read, holds a and c only, never A's b."""
    from megarecipe.recipes import recipe_file
    from megarecipe.recipes.pipeline import Pipeline

    other = tmp_path / "other.yaml"
    other.write_text(
        open(SLIVER)
        .read()
        .replace("{name: b,", "{name: c,")
        .replace("    b: {", "    c: {")
        .replace("sizes: [b]", "sizes: [c]")
        .replace("size: b,", "size: c,")
    )
    out = str(tmp_path / "out")
    plans = []
    for path in (SLIVER, str(other)):
        recipe = recipe_file.load(path, fake_recipe(fake_data))
        Pipeline(recipe, out, stop_after="regularized", log=lambda m: None).run()
        plans.append(json.load(open(os.path.join(out, "plan.json"))))
    assert [sorted(p["standard"]) for p in plans] == [["a", "b"], ["a", "c"]]
    assert [sorted(p["regularized"]) for p in plans] == [["a", "b"], ["a", "c"]]


def test_without_search_the_certified_values_are_used_after_a_search(tmp_path, fake_data, fake_trainer):
    """plan.json's searched values from an earlier `--search` call must not leak into a call without it (which
    would train them and report them as found "by the search in this call")."""
    from megarecipe.recipes import recipe_file
    from megarecipe.recipes.pipeline import Pipeline
    from megarecipe.rundir import RunDir

    out = tmp_path / "out"
    out.mkdir()
    searched = {"lr": 3e-3, "weight_decay": 0.1, "epochs": 4}
    (out / "plan.json").write_text(json.dumps({"hyper": {"standard": {"a": searched, "b": searched}}}))
    Pipeline(
        recipe_file.load(SLIVER, fake_recipe(fake_data)), str(out), stop_after="standard", log=lambda m: None
    ).run()
    facts = RunDir(str(out / "standard" / "a")).info()["facts"]
    assert (facts["lr"], facts["epochs"]) == (1e-2, 2)  # sliver.yaml's certified values
    assert "hyper" not in json.load(open(out / "plan.json"))


@pytest.mark.parametrize("plan,stages", [("[]", "{}"), ('{"standard": 5}', '{"standard": 5, "last_call": []}')])
def test_plan_and_stages_of_the_wrong_shape_are_rebuilt(tmp_path, fake_data, fake_trainer, plan, stages):
    from megarecipe.recipes import recipe_file
    from megarecipe.recipes.pipeline import Pipeline

    out = tmp_path / "out"
    out.mkdir()
    (out / "plan.json").write_text(plan)
    (out / "stages.json").write_text(stages)
    Pipeline(
        recipe_file.load(SLIVER, fake_recipe(fake_data)), str(out), stop_after="standard", log=lambda m: None
    ).run()
    assert sorted(json.load(open(out / "plan.json"))["standard"]) == ["a", "b"]
    assert json.load(open(out / "stages.json"))["standard"]["did_work"]


def test_report_without_seed_noise_keeps_the_three_point_warning(tmp_path):
    """No ensemble, so no seed noise for the bootstrap: a fit of 3 points then interpolates and its interval is
    empty of meaning, which the report must say rather than drop."""
    from megarecipe.analysis import recipe_report
    from megarecipe.analysis.recipe_plan import RecipeFits, RecipePlan
    from megarecipe.recipes import recipe_file
    from megarecipe.rundir import RunDir

    runs = {}
    for size, params, loss in (("a", 1e6, 4.0), ("b", 2e6, 3.7), ("c", 4e6, 3.55)):
        runs[size] = str(tmp_path / size)
        RunDir(runs[size]).update(status="finished", final={"val_loss": loss}, facts={"params": int(params)})
    recipe = recipe_file.load(SLIVER, ["bootstrap=20"])
    plan = RecipePlan(standard=runs, regularized=runs)
    fits, _ = recipe_report.compute(str(tmp_path), recipe, plan)
    written = RecipeFits.from_dict(json.loads(json.dumps(recipe_report._plain(fits.to_dict()))))
    text = recipe_report.markdown(recipe, plan, {}, written, [], str(tmp_path))
    assert "3 points for 3 parameters" in text and "no seed-to-seed noise was measured" in text


def test_a_logit_kd_student_of_other_members_than_its_teacher_now_has_is_refused(tmp_path, fake_data, monkeypatch):
    """The teacher re-scored with more members (distill.teachers[].members raised): the finished logit-KD student,
    whose settings name only the teacher's dir, is read back; it was taught by the old members."""
    from megarecipe.analysis.recipe_plan import RecipePlan
    from megarecipe.recipes import distill, recipe_file
    from megarecipe.recipes.pipeline import Pipeline, PipelineError
    from megarecipe.rundir import RunDir

    teacher = tmp_path / "teacher"
    teacher.mkdir()
    monkeypatch.setattr(distill, "teacher", lambda p, t: str(teacher))
    monkeypatch.setattr(distill, "synthetic", lambda p, t, d: (str(tmp_path / "synthetic"), None))  # drawn
    pipeline = Pipeline(recipe_file.load(SLIVER, fake_recipe(fake_data)), str(tmp_path / "out"), log=lambda m: None)
    pipeline.plan = RecipePlan(regularized={"a": str(tmp_path / "single")})
    specs = []
    monkeypatch.setattr(pipeline, "run_all", lambda s: specs.extend(s))
    (teacher / "ensemble.json").write_text(json.dumps({"members": ["m1", "m2"], "val_loss_by_k": [3.5, 3.4]}))
    RunDir(str(tmp_path / "out" / "distill" / "logit_kd")).update(status="finished", distill={"members": ["m1", "m2"]})
    pipeline.stage_distill()
    mixes = [o for s in specs for o in s.overrides if o.startswith("data.mix=")]
    assert len(mixes) == 2 and all(f"{fake_data}:0.25," in m and ":0.75]" in m for m in mixes)
    students = [s for s in specs if any(o.startswith("data.mix=") for o in s.overrides)]
    assert all({"optim.lr=0.003", "optim.weight_decay=0.1", "train.epochs=2"} <= set(s.overrides) for s in students)
    (teacher / "ensemble.json").write_text(json.dumps({"members": ["m1", "m2", "m3"], "val_loss_by_k": [3.5] * 3}))
    with pytest.raises(PipelineError, match="distilled from 2 member.*now has 3"):
        pipeline.stage_distill()


def test_a_second_pipeline_on_the_same_out_is_refused(tmp_path, fake_data):
    from megarecipe.recipes import recipe_file
    from megarecipe.recipes.pipeline import Pipeline, PipelineError
    from megarecipe.rundir import RunDir

    out = str(tmp_path / "out")
    with RunDir(out).hold():  # as a running tools/recipe.py holds it
        with pytest.raises(PipelineError, match="in use by another process.*choose another --out"):
            Pipeline(recipe_file.load(SLIVER, fake_recipe(fake_data)), out, log=lambda m: None).run()


def test_a_prepared_data_dir_of_another_vocabulary_is_refused(tmp_path, fake_data, capsys):
    """REPORT.md states the recipe's vocabulary: a data dir prepared with another must not be used silently."""
    err = _one_line_error(capsys, [SLIVER, f"data.dir={fake_data}", "--out", str(tmp_path / "out")])
    assert "prepared with a vocabulary of 256, the recipe asks for 1024; set data.vocab_size=256" in err


def test_the_teachers_sample_two_at_once_on_a_thread_each(tmp_path):
    """distill.sample_all: launch.parallel commands at once, each told its threads; a failed one is one line
    naming it (with its last stderr line) after the others have ended."""
    from types import SimpleNamespace

    from megarecipe.recipes import distill
    from megarecipe.recipes.pipeline import Pipeline, PipelineError

    def job(name, code):
        script = (
            "import os, sys, time; "
            f"open({str(tmp_path / name)!r}, 'w').write(os.environ['OMP_NUM_THREADS'] + ' ' + "
            "os.environ['MEGARECIPE_THREADS'] + ' ' + repr(time.time())); "
            f"time.sleep(1.5); open({str(tmp_path / name)!r}, 'a').write(' ' + repr(time.time())); "
            f"print('bad teacher', file=sys.stderr); sys.exit({code})"
        )
        return name, [sys.executable, "-c", script]

    lines = []
    p = SimpleNamespace(
        worked=False,
        log=lines.append,
        error=PipelineError,
        r=SimpleNamespace(
            budget=1024,
            launch=SimpleNamespace(parallel=2),
            distill=SimpleNamespace(synthetic_tokens=2048, temperature=1.0),
        ),
    )
    p.threads = lambda: Pipeline.threads(p)
    distill.sample_all(p, [job("ensemble", 0), job("self", 0)])
    written = [(tmp_path / n).read_text().split() for n in ("ensemble", "self")]
    share = str(max(1, (os.cpu_count() or 1) // 2))
    assert [w[:2] for w in written] == [[share, share]] * 2
    starts, ends = [float(w[2]) for w in written], [float(w[3]) for w in written]
    assert max(starts) < min(ends)  # side by side, not one after the other
    assert p.worked and lines == [
        "  distill/synthetic/ensemble: sampling 2,048 tokens at T = 1",
        "  distill/synthetic/self: sampling 2,048 tokens at T = 1",
    ]
    with pytest.raises(PipelineError, match=r"^distill/synthetic/b: sampling failed \(bad teacher\); run the"):
        distill.sample_all(p, [job("a", 0), job("b", 3), job("c", 0)])
    assert (tmp_path / "c").is_file()  # started after b failed: the others run to their end


def test_sigterm_during_sampling_stops_the_samples_and_undecodable_stderr_is_still_one_line(tmp_path):
    """SIGTERM to the recipe tool while the teachers sample: SystemExit (the tool's "interrupted" path) and every
    sample stopped and reaped, not left drawing beside a rerun. A failed sample whose stderr is not UTF-8 is the
    one line all the same, and does not stop the others."""
    from types import SimpleNamespace

    from megarecipe.recipes import distill
    from megarecipe.recipes.pipeline import PipelineError

    p = SimpleNamespace(
        worked=False,
        log=lambda m: None,
        error=PipelineError,
        threads=lambda: 1,
        r=SimpleNamespace(
            budget=1024,
            launch=SimpleNamespace(parallel=2),
            distill=SimpleNamespace(synthetic_tokens=2048, temperature=1.0),
        ),
    )

    def job(name, script):
        return name, [sys.executable, "-c", f"import os, signal, sys, time; {script}"]

    pids = tmp_path / "pids"
    draws = f"open({str(pids)!r}, 'a').write(f'{{os.getpid()}} '); "
    stops = f"{draws}[time.sleep(0.05) for _ in range(200) if len(open({str(pids)!r}).read().split()) < 2]; "
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:  # b, once both draw, is the scheduler's SIGTERM to the tool
        distill.sample_all(p, [job("a", draws + "time.sleep(60)"), job("b", stops + "os.kill(os.getppid(), 15)")])
    assert stopped.value.code == 128 + signal.SIGTERM and signal.getsignal(signal.SIGTERM) == before
    for pid in map(int, pids.read_text().split()):
        assert not os.path.exists(f"/proc/{pid}"), "a sample outlived the stopped tool"

    done = tmp_path / "done"
    with pytest.raises(PipelineError, match=r"^distill/synthetic/bin: sampling failed \(\ufffd\ufffd boom\)"):
        distill.sample_all(
            p,
            [
                job("bin", "sys.stderr.buffer.write(b'\\xff\\xfe boom\\n'); sys.exit(1)"),
                job("ok", f"time.sleep(1); open({str(done)!r}, 'w').close()"),
            ],
        )
    assert done.is_file()


def test_each_sample_knows_the_recipe_tool_as_its_owner(tmp_path):
    """The teachers' samples get MEGARECIPE_OWNER_PID = the tool, so `distill sample` (stop_with_launcher) stops
    when the tool is killed with kill -9; run by hand, without it, a sample keeps running after its shell."""
    from types import SimpleNamespace

    from megarecipe.recipes import distill

    p = SimpleNamespace(
        worked=False,
        log=lambda m: None,
        threads=lambda: 1,
        r=SimpleNamespace(
            budget=1024,
            launch=SimpleNamespace(parallel=2),
            distill=SimpleNamespace(synthetic_tokens=2048, temperature=1.0),
        ),
    )
    seen = tmp_path / "owner"
    code = f"import os; open({str(seen)!r}, 'w').write(os.environ.get('MEGARECIPE_OWNER_PID', ''))"
    distill.sample_all(p, [("a", [sys.executable, "-c", code])])
    assert seen.read_text() == str(os.getpid())
