"""Which settings a resume may change: the ones that operate the run, never what it computes or measures.
In one process, against a checkpoint's saved resume key (what check_config and the trainer both check)."""

import os
import shutil

import pytest
import torch

from megarecipe.config import load_config
from megarecipe.preflight import check_run
from megarecipe.rundir import RunDir
from megarecipe.train.loop import TrainingError, check_run_dir, resume_key
from tests.helpers import TINY


def config(data_dir, run_dir, *overrides):
    cfg = load_config("configs/tiny.yaml", [*TINY, f"data.dir={data_dir}", f"run.dir={run_dir}", *overrides])
    return cfg, check_run(cfg, world_size=1)


def save_rank0(folder, step, key):
    """rank 0's trainer file as the trainer writes it (RNG state included: a file without it is refused)."""
    from megarecipe.train.checkpoint import _rng_state

    folder.mkdir(parents=True)
    torch.save({"step": step, "rng": _rng_state(), "resume_key": key}, folder / "trainer_rank0.pt")


@pytest.fixture
def checkpointed(tmp_path, tiny_data):
    """A run dir whose one checkpoint holds the resume key of TINY on tiny_data (the key is all a resume checks
    before loading)."""
    cfg, layout = config(tiny_data, tmp_path / "run")
    folder = tmp_path / "run" / "checkpoints" / "step00000004"
    save_rank0(folder, 4, resume_key(cfg, layout))
    (folder.parent / "latest").write_text("step00000004")
    return tmp_path / "run"


def check(data_dir, run_dir, *overrides):
    cfg, layout = config(data_dir, run_dir, "run.resume=true", *overrides)
    return check_run_dir(cfg, RunDir(cfg.run.dir), resume_key(cfg, layout))


@pytest.fixture(scope="module")
def other_data(tiny_data, tmp_path_factory):
    """Other text, the same tokenizer and enough tokens for TINY's budget."""
    from megarecipe.data.corpus import sotu_files
    from megarecipe.data.prepare import prepare

    out = tmp_path_factory.mktemp("other") / "data"
    prepare(sotu_files()[1::12], str(out), val_tokens=20_000, tokenizer=os.path.join(tiny_data, "tokenizer.model"))
    return str(out)


def test_operational_settings_may_change(checkpointed, tiny_data):
    assert (
        check(
            tiny_data,
            checkpointed,
            "train.eval_every=2",
            "train.log_every=3",
            "train.stop_after=12",
            "train.checkpoint_every=5",
            "train.keep_checkpoints=4",
            "train.progress=true",
            "model.kernels=sdpa",
            "model.recompute=full",
        )
        == "step00000004"
    )


def test_the_same_data_moved_elsewhere_resumes(checkpointed, tiny_data, tmp_path):
    moved = shutil.copytree(tiny_data, tmp_path / "moved")
    assert check(moved, checkpointed) == "step00000004"


@pytest.mark.parametrize(
    "overrides,named",
    [
        (["optim.lr=1e-3"], "optim.lr 0.003 -> 0.001"),
        (["model.hidden_size=128"], "model.hidden_size 64 -> 128"),
        (["train.epochs=2"], "train.epochs 1 -> 2"),
        (["data.train_tokens=19000"], "num_sequences"),
        (["data.val_tokens=4096"], "data.val_tokens 2048 -> 4096"),
    ],
)
def test_settings_that_change_the_result_are_refused(checkpointed, tiny_data, overrides, named):
    with pytest.raises(TrainingError) as e:
        check(tiny_data, checkpointed, *overrides)
    assert named in str(e.value), e.value


def test_a_transformer_engine_checkpoint_resumes_only_with_it(tmp_path, tiny_data):
    """Its norm weights have other names. The key holds an entry only for te runs; an entry only one side
    has counts as a change (te cannot be configured on a CPU machine, so the saved key is written here)."""
    cfg, layout = config(tiny_data, tmp_path / "run")
    folder = tmp_path / "run" / "checkpoints" / "step00000004"
    save_rank0(folder, 4, {**resume_key(cfg, layout), "model.kernels (parameter names)": "te"})
    (folder.parent / "latest").write_text("step00000004")
    with pytest.raises(TrainingError, match=r"model\.kernels \(parameter names\) 'te' -> None"):
        check(tiny_data, tmp_path / "run")


def test_another_data_dir_with_the_same_tokenizer_is_refused(checkpointed, other_data):
    with pytest.raises(TrainingError, match=r"data\.dir \(contents sha256\)"):
        check(other_data, checkpointed)


def test_a_finished_run_is_left_as_it_is(tmp_path, tiny_data):
    """A requeued or repeated launch of a finished run changes nothing (it rewrote the export and set run.json's
    final val_loss to null)."""
    from megarecipe import rundir
    from megarecipe.train.loop import train

    cfg, layout = config(tiny_data, tmp_path / "run", "run.resume=true")
    folder = tmp_path / "run" / "checkpoints" / f"step{layout.total_steps:08d}"
    save_rank0(folder, layout.total_steps, resume_key(cfg, layout))
    (folder.parent / "latest").write_text(folder.name)
    run = RunDir(tmp_path / "run")
    run.update(status=rundir.FINISHED, final={"val_loss": 6.25, "step": layout.total_steps})
    before = (tmp_path / "run" / "run.json").read_bytes()
    train(cfg, layout)  # would build the model and a process group if it went on
    assert (tmp_path / "run" / "run.json").read_bytes() == before
    assert sorted(os.listdir(tmp_path / "run")) == ["checkpoints", "run.json", "run.lock"]


def test_a_damaged_run_json_is_refused_before_anything_is_built(checkpointed, tiny_data):
    from megarecipe.rundir import RunDirError

    (checkpointed / "run.json").write_text("{garbage")
    with pytest.raises(RunDirError, match="run.json is unreadable"):
        check(tiny_data, checkpointed)


def test_the_launch_check_refuses_a_run_dir_in_use(checkpointed, tiny_data, capsys):
    from megarecipe.cli.check_config import main

    args = ["configs/tiny.yaml", *TINY, f"data.dir={tiny_data}", f"run.dir={checkpointed}", "run.resume=true"]
    assert main(args) == 0
    with RunDir(checkpointed).hold():
        assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is in use by another process" in err[0], err


def saved_as(run_dir, tiny_data, *overrides, **written):
    """The checkpoint as another layout wrote it: its saved key with `written` in place."""
    cfg, layout = config(tiny_data, run_dir, *overrides)
    folder = run_dir / "checkpoints" / "step00000004"
    save_rank0(folder, 4, {**resume_key(cfg, layout), **written})
    (folder.parent / "latest").write_text("step00000004")


@pytest.mark.parametrize(
    "written,overrides",
    [
        ({"world_size": 2}, []),  # DP=2 -> 1
        ({"world_size": 2, "tp": 2}, []),  # TP=2 -> 1
        ({"world_size": 2, "tp": 2}, ["model.vocab_size=2048"]),  # the padded rows, spelled out
        ({"world_size": 4}, ["parallel.ds_config=zero2"]),
    ],
)
def test_another_layout_may_resume(tmp_path, tiny_data, written, overrides):
    saved_as(tmp_path / "run", tiny_data, *overrides, **written)
    assert check(tiny_data, tmp_path / "run", *overrides) == "step00000004"


@pytest.mark.parametrize(
    "written,overrides,named",
    [
        ({"world_size": 2, "global_batch_size": 32}, [], "global_batch_size 32 -> 16"),
        ({"world_size": 2, "model.hidden_size": 128}, [], "model.hidden_size 128 -> 64"),
        ({"world_size": 2, "zero_stage": 2}, [], "zero_stage 2 -> 1"),
        ({"world_size": 2}, ["parallel.ds_config=zero0"], "ZeRO stage 0 keeps the optimizer inside the model file"),
        ({"world_size": 2}, ["parallel.ds_config=zero3"], "ZeRO-3"),
        ({"world_size": 2, "pp": 2}, [], "pipeline parallelism (pp 2 -> 1)"),
    ],
)
def test_a_layout_change_that_cannot_carry_over_is_refused(tmp_path, tiny_data, written, overrides, named):
    saved_as(tmp_path / "run", tiny_data, *overrides, **written)
    with pytest.raises(TrainingError) as e:
        check(tiny_data, tmp_path / "run", *overrides)
    assert named in str(e.value) and "\n" not in str(e.value), e.value


def test_other_padded_vocabulary_rows_name_the_setting_that_keeps_them(tmp_path, tiny_data):
    """A tokenizer of 300 pieces pads to 512 rows on TP=2 and 384 on TP=1: the line gives the fix, and with it
    the rows are the same."""
    from megarecipe.train.loop import _compare_vocab_rows

    cfg, _ = config(tiny_data, tmp_path / "run")
    saved, now = {"tp": 2, "model.vocab_size": None}, {"tp": 1, "model.vocab_size": None}
    with pytest.raises(
        TrainingError,
        match=r"pads to 384 rows there, the checkpoint has 512; add model\.vocab_size"
        r"=512",
    ):
        _compare_vocab_rows(cfg, saved, now, {}, vocab=300)
    changed = {"model.vocab_size": (None, 512)}
    _compare_vocab_rows(cfg, saved, {"tp": 1, "model.vocab_size": 512}, changed, vocab=300)
    assert changed == {}
