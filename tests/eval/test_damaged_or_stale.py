"""A damaged export (model.json, config.yaml, model.safetensors) read by ensemble eval, export_hf and evaluate:
one line naming the file, exit 2, never a traceback nor the defaults for an empty config; export_hf never replaces
a directory not its own; the recipe never keeps downstream results of another set of weights."""

import json
import shutil

import pytest

from megarecipe.cli import ensemble, evaluate, export_hf

DAMAGE = {
    "model.json truncated": ("model.json", lambda p: p.write_text(p.read_text()[:20])),
    "model.json a list": ("model.json", lambda p: p.write_text("[]")),
    "model.json without keys": ("model.json", lambda p: p.write_text("{}")),
    "model.json vocab a string": (
        "model.json",
        lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "vocab_size": "2048"})),
    ),
    "config.yaml empty": ("config.yaml", lambda p: p.write_text("")),
    "weights truncated": ("model.safetensors", lambda p: p.write_bytes(p.read_bytes()[:1000])),
}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize("what", list(DAMAGE))
def test_a_damaged_export_is_one_line(tmp_path, tiny_run, capsys, what):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    name, damage = DAMAGE[what]
    damage(run / "export" / name)
    calls = [
        lambda: export_hf.main([str(run), "--out", str(tmp_path / "hf")]),
        lambda: evaluate.main([str(run), "--tasks", "sciq", "--limit", "1", "--batch-size", "1"]),
    ]
    if name != "model.safetensors":  # the scorer reads the weights after the data; the names are checked first
        calls.append(lambda: ensemble.main(["eval", "--runs", str(run), "--out", str(tmp_path / "ens")]))
    for call in calls:
        capsys.readouterr()
        assert call() == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert f"export/{name}" in err and "damaged" in err
    assert not (tmp_path / "hf").exists()


def test_export_hf_never_replaces_a_directory_that_is_not_its_own(tmp_path, tiny_run, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "run.json").write_text("{}")
    before = sorted(p.name for p in run.rglob("*"))
    capsys.readouterr()
    assert export_hf.main([str(run), "--out", str(run)]) == 2  # the run itself: it would be deleted
    err = capsys.readouterr().err
    assert err.startswith("error: --out") and "no Hugging Face export of ours" in err and err.count("\n") == 1
    assert sorted(p.name for p in run.rglob("*")) == before
    hf = tmp_path / "hf"
    assert export_hf.main([str(run), "--out", str(hf)]) == 0 and export_hf.main([str(run), "--out", str(hf)]) == 0


def test_the_recipe_rescores_downstream_when_the_ensemble_changes(tmp_path, tiny_run, tokenizer_model):
    """An ensemble re-scored with another member set (the recipe run again with more members) must not keep the
    downstream accuracies of the old set as its own."""
    from megarecipe.analysis.downstream import compare_table, read_results
    from megarecipe.recipes import recipe_file
    from megarecipe.recipes.pipeline import Pipeline
    from tests.eval.conftest import make_run
    from tests.recipes.test_recipe import SLIVER

    second = make_run(tmp_path / "second", tokenizer_model, seed=1)
    ens = tmp_path / "ens"
    ens.mkdir()
    logs = []
    pipeline = Pipeline(recipe_file.load(SLIVER, ["downstream.limit=1"]), str(tmp_path / "out"), log=logs.append)
    pipeline.downstream_models = lambda: {"ensemble": str(ens)}
    for members in ([tiny_run], [tiny_run, second]):
        (ens / "ensemble.json").write_text(json.dumps({"members": members}))
        if len(members) == 2:  # evaluate.py --compare marks the result of the old set until it is scored again
            assert "| ens* |" in compare_table([str(ens)]) and "scored other weights" in compare_table([str(ens)])
        logs.clear()
        pipeline.stage_downstream()
        assert not any("evaluated before" in line for line in logs), logs
        assert "| ens |" in compare_table([str(ens)])
    assert len(read_results(str(ens))["sciq"].get("model") or []) == 2
    logs.clear()
    pipeline.stage_downstream()
    assert any("evaluated before" in line for line in logs)


def test_the_recipe_rescores_an_ensemble_whose_member_was_retrained_in_place(tmp_path, tokenizer_model, monkeypatch):
    """Same member paths, new weights (a member deleted and trained again): the old K = 1..n losses are stale."""
    import os

    from megarecipe import atomic
    from megarecipe.analysis import heldout
    from megarecipe.recipes import recipe_file
    from megarecipe.recipes.pipeline import Pipeline
    from tests.eval.conftest import make_run
    from tests.recipes.test_recipe import SLIVER

    runs = [os.path.abspath(make_run(tmp_path / f"m{i}", tokenizer_model, seed=i)) for i in range(2)]
    scored = []

    def fake_score(run_dirs, out_dir, **how):  # what write_result leaves, without scoring held-out data
        scored.append(list(run_dirs))
        os.makedirs(out_dir, exist_ok=True)
        atomic.write_json(
            os.path.join(out_dir, "ensemble.json"),
            {"members": run_dirs, "val_loss_by_k": [5.0, 4.9], "weights": heldout.weights_identity(run_dirs)},
        )
        return [5.0, 4.9]

    monkeypatch.setattr(heldout, "evaluate_ensemble", fake_score)
    recipe = recipe_file.load(SLIVER, ["ensemble.sizes=[" + recipe_file.load(SLIVER, []).ensemble.sizes[0] + "]"])
    pipeline = Pipeline(recipe, str(tmp_path / "out"), log=lambda m: None)
    pipeline.member_runs = lambda *args, **kw: (runs, [])
    pipeline.run_all = lambda specs: None
    for expected in (1, 1, 2, 3):
        if expected == 2:  # retrained in place: the same path, other weights
            make_run(tmp_path / "m1", tokenizer_model, seed=7)
        if expected == 3:  # m0's weights moved over m1's with m1's times (rsync -a): same size and mtime
            import shutil

            from megarecipe import rundir
            from megarecipe.rundir import RunDir

            old, src = (os.path.join(RunDir(r).export, rundir.WEIGHTS) for r in (runs[1], runs[0]))
            st, tmp = os.stat(old), old + ".tmp"
            shutil.copyfile(src, tmp)
            os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
            os.replace(tmp, old)
            assert (os.stat(old).st_size, os.stat(old).st_mtime_ns) == (st.st_size, st.st_mtime_ns)
        pipeline.stage_ensembles()
        assert len(scored) == expected
