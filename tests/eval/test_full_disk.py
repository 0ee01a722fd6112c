"""A full or read-only disk under the tools (issue 24): one line naming the path and the fix, exit 2 (3 for a
run), nothing half-written left behind to keep the disk full, and a read-only output refused before the scoring.
Each file system is a small tmpfs mounted by the test (skipped where mounting is not allowed)."""

import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import REPO, TINY, env, read_only, tmpfs, torchrun


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def one_line(err: str) -> str:
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err[-3000:]
    return err


def left(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files)


def test_a_checkpoint_on_a_full_disk_is_one_line_and_leaves_no_partial_step(tiny_data, tmp_path):
    with tmpfs(tmp_path / "disk", "3m") as disk:  # room for run.json and events, not for a checkpoint
        run = os.path.join(disk, "run")
        result = torchrun(
            0, [*TINY, f"data.dir={tiny_data}", f"run.dir={run}", "train.stop_after=1", "train.eval_every=1000"]
        )  # `python -m megarecipe.cli.train configs/tiny.yaml ...`, warm
        assert result.returncode == 3, result.stderr[-3000:]
        err = one_line(result.stderr)
        assert "checkpoint step00000001 could not be written" in err and "run.resume=true" in err
        assert os.listdir(os.path.join(run, "checkpoints")) == []  # the partial step dir is gone


def test_distill_cache_on_a_full_disk_is_one_line_not_sigbus(tiny_data, tmp_path):
    from tests.unit.test_distill import _teacher_run

    teacher = _teacher_run(tmp_path, "t", tiny_data)
    with tmpfs(tmp_path / "disk", "2m") as disk:  # the cache needs about 10 MB
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "megarecipe.cli.distill",
                "cache",
                "--teacher",
                str(teacher),
                "--student",
                "configs/tiny.yaml",
                "--out",
                f"{disk}/cache",
                "--k",
                "64",
                f"data.dir={tiny_data}",
                "model.seq_len=64",
                "data.train_tokens=20000",
            ],
            cwd=REPO,
            env=env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
        err = one_line(result.stderr)
        assert f"--out {disk}/cache" in err and "GB free" in err
        assert left(disk) == []


def test_export_hf_and_prepare_data_on_a_full_disk(tiny_run, tiny_data, tmp_path, capsys):
    from megarecipe.cli import export_hf, prepare_data
    from megarecipe.data.corpus import sotu_files

    with tmpfs(tmp_path / "disk", "256k") as disk:  # the weights alone are about 1 MB, the tokens 0.7 MB
        capsys.readouterr()
        assert export_hf.main([tiny_run, "--out", f"{disk}/hf"]) == 2
        err = one_line(capsys.readouterr().err)
        assert err.startswith(f"error: {disk}/hf") and "disk is full" in err
        assert left(disk) == []
        assert (
            prepare_data.main(
                [
                    "--input",
                    *sotu_files()[::12],
                    "--tokenizer",
                    os.path.join(tiny_data, "tokenizer.model"),
                    "--out",
                    f"{disk}/data",
                    "--no-progress",
                ]
            )
            == 2
        )
        err = one_line(capsys.readouterr().err)
        assert err.startswith(f"error: {disk}/data") and "disk is full" in err
        assert left(disk) == []


def test_ensemble_eval_and_evaluate_refuse_a_read_only_output_before_scoring(tiny_data, tiny_run, tmp_path, capsys):
    from megarecipe.cli import ensemble, evaluate
    from tests.analysis.test_ensemble import make_member

    members = [make_member(tmp_path / f"seed{s}", tiny_data, s) for s in (1, 2)]
    with tmpfs(tmp_path / "share", "4m") as share:
        shutil.copytree(tiny_run, f"{share}/run")
        read_only(share)
        capsys.readouterr()
        assert ensemble.main(["eval", "--runs", *members, "--out", f"{share}/ens", "--device", "cpu"]) == 2
        err = one_line(capsys.readouterr().err)
        assert f"{share}/ens" in err and "read-only" in err
        assert evaluate.main([f"{share}/run", "--tasks", "sciq", "--limit", "1", "--batch-size", "1"]) == 2
        err = one_line(capsys.readouterr().err)
        assert f"{share}/run/eval" in err and "read-only" in err


def test_the_trainer_s_export_on_a_full_disk_is_an_os_error_and_leaves_nothing(tiny_run, tmp_path):
    """What the trainer writes at its end: safetensors' own error type becomes the OSError the tools report."""
    import errno

    from megarecipe.model.export import load_export, write_export

    model, cfg, info = load_export(os.path.join(tiny_run, "export"))
    with tmpfs(tmp_path / "disk", "256k") as disk:
        with pytest.raises(OSError) as e:
            write_export(f"{disk}/run/export", model.state_dict(), cfg, info["vocab_size"])
        assert e.value.errno == errno.ENOSPC
        assert left(disk) == []
