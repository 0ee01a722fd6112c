"""Ensemble scoring on exported members: every K in one pass, in turns, over ranks; and its one-line errors.

The members are untrained Llamas with large random weights (distinct logits per seed), exported the way the
trainer exports, so these tests need no training; tests/distributed/test_train.py scores trained members."""

import os

import pytest
import torch

from megarecipe.analysis.ensemble import Placement, ensemble_losses
from megarecipe.analysis.heldout import score_members
from megarecipe.analysis.members import EnsembleError, read_members
from megarecipe.config import load_config
from megarecipe.model.export import write_export
from megarecipe.model.reference import Llama
from megarecipe.rundir import RunDir
from tests.helpers import write_run

SHAPE = [
    "model.num_layers=1",
    "model.hidden_size=32",
    "model.ffn_hidden_size=64",
    "model.num_attention_heads=2",
    "model.num_query_groups=1",
    "model.seq_len=32",
    "model.init_std=0.3",
    "data.val_tokens=1600",
    "train.eval_batch_size=4",
]
VOCAB = 2048


def make_member(path, data_dir, seed, *overrides, weights_from=None):
    cfg = load_config(None, [*SHAPE, f"data.dir={data_dir}", f"run.seed={seed}", f"run.dir={path}", *overrides])
    torch.manual_seed(seed if weights_from is None else weights_from)
    model = Llama(cfg.model, VOCAB)
    write_export(RunDir(str(path)).export, model.state_dict(), cfg, VOCAB)
    write_run(str(path), facts={"params": 1000, "seed": seed}, val={1: 7.0 + seed / 10})
    return str(path)


@pytest.fixture(scope="module")
def members(tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("members")
    return [make_member(root / f"seed{s}", tiny_data, s) for s in (1, 2, 3)]


def test_placement_deals_members_out_in_turns():
    p = Placement(members=5, world=2, resident=1)
    assert (p.turns, list(p.turn_members(2))) == (3, [4])
    assert [p.owner(k) for k in range(5)] == [(0, 0), (1, 0), (0, 0), (1, 0), (0, 0)]
    assert Placement(members=3, world=2).slots == 2 and Placement(members=3, world=2).turns == 1


def test_identical_members_score_as_the_single_member(members, tiny_data, tmp_path):
    twin = make_member(tmp_path / "twin", tiny_data, 9, weights_from=1)
    losses = score_members(read_members([members[0], twin, members[0]]), "cpu")
    assert losses == pytest.approx([losses[0]] * 3, abs=1e-6)
    # and the one-member loss is the model's own held-out loss, computed independently here
    cfg = read_members([members[0]])[0].cfg
    from megarecipe.data.dataset import validation_batches
    from megarecipe.model.export import load_export

    model = load_export(RunDir(members[0]).export)[0]
    total = count = 0
    with torch.no_grad():
        for x, y in validation_batches(tiny_data, cfg.model.seq_len, 4, max_tokens=cfg.data.val_tokens):
            total += model.loss(x, y, reduction="sum").item()
            count += int((y != -100).sum())
    assert losses[0] == pytest.approx(total / count, rel=1e-6)


def test_turns_equal_all_resident_and_averaging_helps(members):
    ms = read_members(members)
    resident = score_members(ms, "cpu")
    turns = score_members(ms, "cpu", resident=1, chunk_batches=3)  # 3 turns over 4 chunks (the last one short)
    assert turns == pytest.approx(resident, abs=1e-6)
    assert len(set(resident)) == 3
    singles = [score_members([m], "cpu")[0] for m in ms]
    assert resident[1] < (singles[0] + singles[1]) / 2  # the logit mean beats its members' mean on these
    assert resident[0] == pytest.approx(singles[0], abs=1e-6)


def test_models_in_memory_score_like_their_exports(members):
    from megarecipe.model.export import load_export

    ms = read_members(members[:2])
    models = [load_export(RunDir(m).export)[0] for m in members[:2]]
    cfg = ms[0].cfg
    in_memory = ensemble_losses(models, cfg.data.dir, cfg.model.seq_len, cfg.data.val_tokens, 4, "cpu")
    assert in_memory == pytest.approx(score_members(ms, "cpu"), abs=1e-6)


def test_two_ranks_equal_one_process(members, tmp_path, capfd):
    """Members 1, 2 on ranks 0, 1 in a first turn, member 3 on rank 0 in a second (rank 1 idle). The tool runs
    in this process; its two ranks start warm from the session's server (through launch/direct, as a user's do)."""
    from megarecipe.cli.ensemble import main

    expected = score_members(read_members(members), "cpu")
    out = tmp_path / "ens"
    code = main(
        [
            "eval",
            "--runs",
            *members,
            "--out",
            str(out),
            "--processes",
            "2",
            "--resident",
            "1",
            "--chunk-batches",
            "5",
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    assert code == 0, capfd.readouterr().err[-3000:]
    got = RunDir(str(out)).info()
    assert got["status"] == "finished" and got["kind"] == "ensemble"
    assert got["final"]["val_loss_by_k"] == pytest.approx(expected, abs=1e-6)
    assert os.path.isfile(out / "loss_vs_members.png")


def test_mismatched_members_are_named(members, tiny_data, tmp_path):
    longer = make_member(tmp_path / "longer", tiny_data, 4, "model.seq_len=16")
    with pytest.raises(EnsembleError, match=r"member .*longer: its model.seq_len is 16.*same sequence length"):
        read_members([members[0], longer])
    other = make_member(tmp_path / "other", str(tmp_path), 5)
    with pytest.raises(EnsembleError, match=r"member .*other: its data.dir"):
        read_members([members[0], other])
    os.makedirs(tmp_path / "unfinished")
    with pytest.raises(EnsembleError, match=r"member .*unfinished: no export .*finish its training"):
        read_members([members[0], str(tmp_path / "unfinished")])


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--runs", "nope", "--out", "x"], "nope: no such run directory"),
        (["--runs", "nope"], "--out: missing"),
        (["ens_missing"], "ens_missing: no such ensemble directory"),
        (["--runs", "a", "--out", "x", "--resident", "0"], "--resident=0 must be >= 1"),
        (["--runs", "a", "b", "./a", "--out", "x"], "--runs: ./a is given twice"),
        (["--runs", "a", "--out", "x", "--device", "bogus"], "--device 'bogus' is not a device"),
    ],
)
def test_eval_errors_are_one_line(args, fragment, tmp_path, capsys, monkeypatch):
    from megarecipe.cli.ensemble import main

    monkeypatch.chdir(tmp_path)
    assert main(["eval", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err and err.count("\n") == 1


def test_an_ensemble_is_never_written_over_a_training_run(members, tiny_data, tmp_path, capsys):
    """`eval --runs A B --out A` (or `train --out RUN`) would replace A's events and final loss with the
    ensemble's: refused with one line, A untouched."""
    import shutil

    from megarecipe.cli.ensemble import main

    run = str(tmp_path / "seed1")
    shutil.copytree(members[0], run)
    RunDir(run).update(kind="train", status="finished", final={"val_loss": 7.1, "step": 1})
    before = sorted(os.listdir(os.path.join(run, "tb"))), RunDir(run).info()
    for args in (
        ["eval", "--runs", run, members[1], "--out", run, "--no-progress"],
        ["train", "tiny", "--members", "2", "--out", run, f"data.dir={tiny_data}"],
    ):
        capsys.readouterr()
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "holds a train run" in err
        assert (sorted(os.listdir(os.path.join(run, "tb"))), RunDir(run).info()) == before


def test_an_interrupted_write_never_reads_as_a_finished_result(members, tmp_path, monkeypatch):
    """Killed between the events and the rest: run.json is not 'finished', and the old curve was replaced whole
    (never two curves in one tb/, never new events under an old finished run.json)."""
    from megarecipe.analysis import heldout, plots
    from megarecipe.analysis.runs import read_scalars

    out = str(tmp_path / "ens")
    heldout.write_result(out, read_members(members[:2]), [5.0, 4.9])
    assert RunDir(out).info()["status"] == "finished"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(plots, "plot_members", killed)
    with pytest.raises(KeyboardInterrupt):
        heldout.write_result(out, read_members(members), [5.0, 4.8, 4.7])
    assert RunDir(out).info()["status"] == "running"
    assert read_scalars(os.path.join(out, "tb"))["ensemble/val_loss"] == pytest.approx({1: 5.0, 2: 4.8, 3: 4.7})
    assert [n for n in os.listdir(tmp_path) if n != "ens"] == []  # no build dir left beside it


def test_scoring_on_one_thread_gives_the_same_losses_and_restores_the_threads(members, tmp_path):
    from megarecipe.analysis.heldout import evaluate_ensemble

    before = torch.get_num_threads()
    ms = read_members(members)
    torch.set_num_threads(2)
    try:
        on_two = score_members(ms, "cpu")
        on_one = evaluate_ensemble(members, str(tmp_path / "ens"), "cpu", threads=1)
        assert torch.get_num_threads() == 2  # the caller's again
    finally:
        torch.set_num_threads(before)
    assert [f"{v:.6f}" for v in on_one] == [f"{v:.6f}" for v in on_two]


def test_a_scored_ensemble_gives_the_losses_of_its_first_members_until_one_changes(members, tiny_data, tmp_path):
    """The recipe's distill teacher is the ensembles stage's first members: their Loss(K) is read from its
    scores, exactly what scoring them again gives; never once a member's weights changed, or another order."""
    import shutil

    from megarecipe.analysis.heldout import evaluate_ensemble, scored_prefix

    runs = [str(tmp_path / f"seed{i}") for i in range(3)]
    for src, dst in zip(members, runs, strict=True):
        shutil.copytree(src, dst)
    scored = str(tmp_path / "ens")
    losses = evaluate_ensemble(runs, scored, "cpu")
    assert scored_prefix(runs[:2], scored) == losses[:2] == score_members(read_members(runs[:2]), "cpu")
    assert scored_prefix(runs, scored) == losses
    assert scored_prefix([runs[1], runs[0]], scored) is None  # Loss(1) would be another member's
    assert scored_prefix([*runs, members[0]], scored) is None  # more members than were scored
    assert scored_prefix(runs[:2], str(tmp_path / "nowhere")) is None
    make_member(runs[1], tiny_data, 7)  # retrained in place: new weights under the same path
    assert scored_prefix(runs[:1], scored) == losses[:1]
    assert scored_prefix(runs[:2], scored) is None


def test_the_pipeline_scores_a_teacher_once(members, tmp_path, monkeypatch):
    """Pipeline._score with `scored`: the ensembles stage's losses, written into the teacher's dir without
    scoring; scored again (on the recipe's thread share) when they do not apply, and read back after."""
    from types import SimpleNamespace

    from megarecipe import ensembledir
    from megarecipe.analysis import heldout
    from megarecipe.recipes.pipeline import Pipeline

    scored, teacher = str(tmp_path / "ensembles" / "b"), str(tmp_path / "distill" / "teachers" / "ensemble")
    losses = heldout.evaluate_ensemble(members, scored, "cpu")
    calls = []
    real = heldout.evaluate_ensemble
    monkeypatch.setattr(heldout, "evaluate_ensemble", lambda *a, **k: calls.append(k) or real(*a, **k))
    lines = []
    p = SimpleNamespace(
        out=str(tmp_path), worked=False, log=lines.append, r=SimpleNamespace(launch=SimpleNamespace(parallel=2))
    )
    p.threads = lambda: Pipeline.threads(p)
    assert Pipeline._score(p, members[:2], teacher, scored=scored) == losses[:2]
    assert calls == [] and p.worked and "(scored in ensembles/b)" in lines[-1]
    assert ensembledir.read(teacher)["val_loss_by_k"] == losses[:2]
    assert RunDir(teacher).info()["status"] == "finished"
    other = str(tmp_path / "distill" / "teachers" / "reversed")
    assert Pipeline._score(p, members[1::-1], other, scored=scored) == score_members(
        read_members(members[1::-1]), "cpu"
    )
    assert calls == [{"threads": max(1, (os.cpu_count() or 1) // 2)}]
    p.worked = False
    assert Pipeline._score(p, members[1::-1], other, scored=scored) == ensembledir.read(other)["val_loss_by_k"]
    assert len(calls) == 1 and not p.worked  # read back
