"""Distillation through the trainer on real text: the student gains from its teacher (one run, an ensemble over
two ranks, a small top-k cache), TP=2 equals TP=1, a stopped run resumes bit-identically, and the teacher is part
of what a resume must match."""

import json
import os

import pytest

from tests.helpers import REPO, TINY, losses, scalars, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def teacher(tiny_data, tmp_path_factory):
    """The tiny student's shape trained for its whole schedule (19 steps). Its own curve up to step 8 is the plain
    student: same seed, schedule and batches, no teacher (train.stop_after changes nothing before it stops)."""
    run_dir, _ = train(tmp_path_factory.mktemp("kd"), "teacher", 1, tiny_data, "train.stop_after=null")
    return run_dir


def _distill_train(tmp_path, name: str, data_dir: str, *options: str, overrides=()):
    """`distill.py train OPTIONS --out RUN --student configs/tiny.yaml ...` in this process, as the tool: its
    trainer ranks start warm from the session's server (the tool's cold command: tests/unit/test_distill.py)."""
    from megarecipe.cli.distill import main

    run_dir = tmp_path / name
    here = os.getcwd()
    os.chdir(REPO)
    try:
        code = main(
            [
                "train",
                *options,
                "--out",
                str(run_dir),
                "--student",
                "configs/tiny.yaml",
                *TINY,
                f"data.dir={data_dir}",
                *overrides,
            ]
        )
    finally:
        os.chdir(here)
    assert code == 0, f"distill.py train exited {code}"
    return run_dir


def test_distillation(tiny_data, tmp_path, teacher):
    from megarecipe.data.tokenizer import file_sha256

    kd = _distill_train(tmp_path, "kd", tiny_data, "--teacher", str(teacher))  # the tool runs the trainer
    plain, val = scalars(teacher, "val/loss"), scalars(kd, "val/loss")
    assert set(val) == {4, 8}
    assert val[4] < plain[4] - 0.03 and val[8] < plain[8] - 0.01, (val, plain)  # same steps and seed, no teacher
    kl, ce, loss = scalars(kd, "distill/kl"), scalars(kd, "distill/ce"), scalars(kd, "train/loss")
    assert sorted(kl) == sorted(ce) == sorted(loss) == list(range(1, 9))
    assert all(kl[s] > 0 and loss[s] == pytest.approx(0.9 * kl[s] + 0.1 * ce[s], rel=1e-5) for s in kl)
    info = json.loads((kd / "run.json").read_text())["distill"]
    assert info["sha256"] == [file_sha256(str(teacher / "export" / "model.safetensors"))]  # the teacher unchanged
    assert info["alpha"] == 0.9 and info["members"] == [str(teacher)]

    tp2, _ = train(tmp_path, "tp2", 2, tiny_data, f"distill.teacher={teacher}", "parallel.tp=2")
    assert losses(tp2) == pytest.approx(losses(kd), abs=2e-4)
    assert [scalars(tp2, "distill/kl")[s] for s in kl] == pytest.approx([kl[s] for s in kl], abs=2e-4)
    assert scalars(tp2, "val/loss") == pytest.approx(val, abs=2e-4)

    train(tmp_path, "split", 1, tiny_data, f"distill.teacher={teacher}", "train.stop_after=4")
    ens = tmp_path / "ens"
    ens.mkdir()
    (ens / "ensemble.json").write_text(json.dumps({"members": [str(teacher), str(teacher)]}))
    _, refused = train(tmp_path, "split", 1, tiny_data, f"distill.teacher={ens}", "run.resume=true", check=False)
    assert refused.returncode != 0 and "cannot resume: distill.teacher_sha256" in refused.stderr
    resumed, _ = train(tmp_path, "split", 1, tiny_data, f"distill.teacher={teacher}", "run.resume=true")
    assert losses(resumed) == losses(kd)  # bit-identical on CPU
    assert scalars(resumed, "distill/kl") == kl and scalars(resumed, "val/loss") == val

    # the teacher's top-k cache with k = the vocabulary: the same training with no teacher run
    from megarecipe.cli.distill import main as distill

    cache = tmp_path / "cache"
    assert (
        distill(
            [
                "cache",
                "--teacher",
                str(teacher),
                "--student",
                "configs/tiny.yaml",
                "--out",
                str(cache),
                "--k",
                "2000",
                f"data.dir={tiny_data}",
                *TINY,
            ]
        )
        == 0
    )
    cached, _ = train(tmp_path, "cached", 1, tiny_data, f"distill.teacher={cache}")
    assert losses(cached) == pytest.approx(losses(kd), abs=1e-5)
    assert json.loads((cached / "run.json").read_text())["distill"]["cache_k"] == 2000


def test_an_ensemble_teaches_over_two_processes(tiny_data, tmp_path, teacher, tiny_ensemble):
    """Three members (seeds 1-3, trained for the whole schedule) teach the student through `distill.py train
    --processes 2` (ZeRO-1 over two ranks): lower val/loss than the same student, seed and batches trained plainly
    (the teacher fixture's own curve up to step 8; two ranks train as one process does: test_train.py)."""
    members = [str(tiny_ensemble / "members" / f"seed{s}") for s in (1, 2, 3)]
    kd = _distill_train(
        tmp_path,
        "kd",
        tiny_data,
        "--teacher",
        str(tiny_ensemble),
        "--processes",
        "2",
        overrides=["parallel.ds_config=zero1"],
    )
    plain, val = scalars(teacher, "val/loss"), scalars(kd, "val/loss")
    assert set(val) == {4, 8} and all(val[s] < plain[s] - 0.02 for s in val), (val, plain)  # 0.09 and 0.045
    assert scalars(kd, "run/world_size") == {0: 2.0}
    info = json.loads((kd / "run.json").read_text())["distill"]
    assert info["members"] == members and len(set(info["sha256"])) == 3


def test_a_small_top_k_cache_teaches(tiny_data, tmp_path, teacher, tiny_ensemble):
    """The ensemble's top-16 cache (16 of 2000 tokens per position, the rest as one outcome), written by the tool
    and taught from: the student still beats plain training of the same seed and batches."""
    from megarecipe.cli.distill import main as distill

    cache = tmp_path / "top16"
    assert (
        distill(
            [
                "cache",
                "--teacher",
                str(tiny_ensemble),
                "--student",
                "configs/tiny.yaml",
                "--out",
                str(cache),
                "--k",
                "16",
                "--batch-size",
                "32",
                f"data.dir={tiny_data}",
                *TINY,
            ]
        )
        == 0
    )
    kd, _ = train(tmp_path, "kd16", 0, tiny_data, f"distill.teacher={cache}")  # what `distill.py train` runs
    plain, val = scalars(teacher, "val/loss"), scalars(kd, "val/loss")
    assert set(val) == {4, 8} and all(val[s] < plain[s] - 0.02 for s in val), (val, plain)  # 0.034 and 0.037
    info = json.loads((kd / "run.json").read_text())["distill"]
    assert info["cache_k"] == 16 and len(info["members"]) == 3
