"""tools/evaluate.py: results into the run (JSON, TensorBoard, Markdown), the comparison table, one-line errors."""

import json
import os

import pytest

from megarecipe.cli.evaluate import main


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_results_land_in_the_run_and_compare(tmp_path, tiny_run, capsys):
    import shutil

    from megarecipe.analysis.runs import read_scalars
    from megarecipe.rundir import eval_tag

    run = str(tmp_path / "run")
    shutil.copytree(tiny_run, run)
    ens = tmp_path / "ens"
    ens.mkdir()
    (ens / "ensemble.json").write_text(json.dumps({"members": [run]}))
    for path in (run, str(ens)):
        assert main([path, "--tasks", "arc_easy,boolq", "--limit", "8"]) == 0
    out = capsys.readouterr().out
    assert "| arc_easy |" in out and "average (2 tasks)" in out
    for path in (run, str(ens)):
        stored = json.load(open(os.path.join(path, "eval", "arc_easy.json")))
        assert stored["n-samples"]["arc_easy"]["effective"] == 8 and stored["megarecipe"]["limit"] == 8
        assert os.path.isfile(os.path.join(path, "eval", "results.md"))
        tags = read_scalars(os.path.join(path, "tb"))
        for task, metrics in (("arc_easy", ("acc", "acc_norm")), ("boolq", ("acc",))):
            for metric in metrics:
                (value,) = tags[eval_tag(task, metric)].values()
                assert 0 <= value <= 1
    member, ensemble = (
        json.load(open(os.path.join(p, "eval", "boolq.json")))["results"]["boolq"] for p in (run, str(ens))
    )
    assert member["acc,none"] == ensemble["acc,none"]  # an ensemble of one scores as its member
    assert main(["--compare", run, str(ens)]) == 0
    table = capsys.readouterr().out
    assert "| task | run | ens |" in table and "average (2 common tasks)" in table


@pytest.mark.parametrize(
    "args,expect",
    [
        (["{run}", "--tasks", "arc_easy,nosuchtask"], "unknown task 'nosuchtask'"),
        (["{run}", "--tasks", "sciq", "--batch-size", "0"], "--batch-size 0: must be at least 1"),
        (["{run}", "--tasks", "sciq", "--device", "cuda:99"], "--device cuda:99: no such CUDA device"),
        (["{empty}", "--tasks", "arc_easy"], "no export"),
        (["{mixed}", "--tasks", "arc_easy"], "another tokenizer"),
        (["--compare", "{empty}"], "no evaluation results"),
    ],
)
def test_errors_are_one_line(tmp_path, tiny_run, tokenizer_model, capsys, args, expect):
    from megarecipe.data.corpus import sotu_files
    from megarecipe.data.tokenizer import train_tokenizer
    from tests.eval.conftest import make_run

    (tmp_path / "empty").mkdir()
    if "{mixed}" in args:
        other_tok = train_tokenizer(sotu_files()[:3], str(tmp_path / "tok"), 1000)
        other = make_run(tmp_path / "other", other_tok)
        (tmp_path / "mixed").mkdir()
        (tmp_path / "mixed" / "ensemble.json").write_text(json.dumps({"members": [tiny_run, other]}))
    paths = {"run": tiny_run, "empty": str(tmp_path / "empty"), "mixed": str(tmp_path / "mixed")}
    assert main([a.format(**paths) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and expect in err and "\n" not in err
