"""The `latest` pointer as a hostile user leaves it: only a tag of this run's checkpoints is followed; anything
else is one error naming what the pointer holds and the complete checkpoint to resume from."""

import json
import os
import subprocess
import sys

import pytest

from megarecipe.train import checkpoint
from megarecipe.train.checkpoint import CheckpointError


def fake_checkpoints(root, *tags):
    """Step dirs that pass the manifest check (one file each, at the size the manifest says)."""
    root.mkdir(parents=True, exist_ok=True)
    for tag in tags:
        (root / tag).mkdir()
        (root / tag / "model.pt").write_bytes(b"x" * 10)
        (root / tag / checkpoint.MANIFEST).write_text(json.dumps({"files": {"model.pt": 10}}))
    (root / checkpoint.POINTER).write_text(tags[-1])
    return root


def test_a_good_pointer_is_followed(tmp_path):
    ckpt = fake_checkpoints(tmp_path / "checkpoints", "step00000004", "step00000008")
    (ckpt / "latest").write_text(" step00000008 \n")
    assert checkpoint.resume_tag(str(ckpt)) == "step00000008"


@pytest.mark.parametrize(
    "content,fragment",
    [
        (b"../../other/checkpoints/step00000008", "which is not a checkpoint tag"),
        (b"OTHER/checkpoints/step00000008", "which is not a checkpoint tag"),
        (b".", "which is not a checkpoint tag"),
        (b"\xff\xfe\x00", "which is not a checkpoint tag"),
        (b"", "is empty"),
    ],
)
def test_a_pointer_outside_this_run_is_refused(tmp_path, content, fragment):
    other = fake_checkpoints(tmp_path / "other" / "checkpoints", "step00000008")
    ckpt = fake_checkpoints(tmp_path / "run" / "checkpoints", "step00000004", "step00000008")
    (ckpt / "latest").write_bytes(content.replace(b"OTHER", str(other.parent).encode()))
    with pytest.raises(CheckpointError) as e:
        checkpoint.resume_tag(str(ckpt))
    line = str(e.value)
    assert fragment in line and "run.resume_from=step00000008" in line and "\n" not in line, line


def test_a_pointer_that_is_a_folder_is_named_as_such(tmp_path):
    ckpt = fake_checkpoints(tmp_path / "checkpoints", "step00000004")
    (ckpt / "latest").unlink()
    (ckpt / "latest").mkdir()
    with pytest.raises(CheckpointError, match="latest is not a file.*run.resume_from=step00000004"):
        checkpoint.resume_tag(str(ckpt))


@pytest.mark.parametrize("megatron_imported", [False, True])
def test_a_checkpoint_from_an_older_version_is_named_as_such(tmp_path, megatron_imported):
    """Before manifests, rank files pickled numpy's RNG state: weights_only refuses them with a long message,
    or loads them once megatron.core is imported (it allows numpy arrays)."""
    import random

    import numpy as np
    import torch

    ckpt = fake_checkpoints(tmp_path / "checkpoints", "step00000008")
    (ckpt / "step00000008" / checkpoint.MANIFEST).unlink()
    torch.save(
        {"step": 8, "rng": {"numpy": np.random.get_state(), "python": random.getstate()}, "resume_key": {}},
        ckpt / "step00000008" / "trainer_rank0.pt",
    )
    if megatron_imported:  # as in every trainer process (and in this one, whatever ran before)
        import megatron.core  # noqa: F401

        with pytest.raises(CheckpointError) as raised:
            checkpoint.saved_resume_key(str(ckpt), checkpoint.resume_tag(str(ckpt)))
        line = str(raised.value)
    else:  # a fresh interpreter: this one may have imported megatron.core already
        code = (
            "import sys\nfrom megarecipe.train import checkpoint\n"
            "try:\n    checkpoint.saved_resume_key(sys.argv[1], checkpoint.resume_tag(sys.argv[1]))\n"
            "except checkpoint.CheckpointError as e:\n    print(str(e), end='')\n"
        )
        result = subprocess.run([sys.executable, "-c", code, str(ckpt)], capture_output=True, text=True, timeout=120)
        line = result.stdout
    assert "an older megarecipe wrote it" in line and "\n" not in line and "\x1b" not in line, line


def test_a_file_missing_from_both_the_tag_and_its_manifest_is_one_line(tmp_path):
    """The manifest was edited along with the file: DeepSpeed's load is the last check, and it names the file."""
    import torch
    import torch.distributed as dist

    ckpt = fake_checkpoints(tmp_path / "checkpoints", "step00000004", "step00000008")
    rng = {"torch": torch.get_rng_state(), "numpy": {}, "python": None}
    torch.save({"step": 8, "rng": rng, "resume_key": {}}, ckpt / "step00000008" / "trainer_rank0.pt")
    (ckpt / "step00000008" / "model.pt").unlink()  # not a torch file; the manifest no longer lists it
    (ckpt / "step00000008" / checkpoint.MANIFEST).write_text(json.dumps({"files": {}}))

    class Engine:
        def load_checkpoint(self, folder, tag):
            open(f"{folder}/{tag}/zero_pp_rank_0_mp_rank_00_optim_states.pt", "rb")

    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        with pytest.raises(CheckpointError) as e:
            checkpoint.Checkpointer(Engine(), str(ckpt), 0, 2, {}).restore("step00000008", 1)
    finally:
        dist.destroy_process_group()
    line = str(e.value)
    assert "step00000008/zero_pp_rank_0_mp_rank_00_optim_states.pt cannot be read" in line, line
    assert "run.resume_from=step00000004" in line, line


def test_a_step_dir_written_again_reads_incomplete_until_its_new_manifest(tmp_path):
    """After run.resume_from an older tag the run writes a newer step dir again: a crash in that write must not
    leave the old manifest vouching for half-written files."""
    import torch.distributed as dist

    ckpt = fake_checkpoints(tmp_path / "checkpoints", "step00000004", "step00000008")
    (ckpt / "latest").write_text("step00000004")

    class CrashingEngine:
        def save_checkpoint(self, folder, tag, client_state, save_latest):
            (ckpt / tag / "model.pt").write_bytes(b"y" * 10)  # new bytes at the old size, then the process dies
            raise KeyboardInterrupt

    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        with pytest.raises(KeyboardInterrupt):
            checkpoint.Checkpointer(CrashingEngine(), str(ckpt), 0, 2, {}).save(8)
    finally:
        dist.destroy_process_group()
    assert checkpoint.newest_complete(str(ckpt)) == "step00000004"
    assert (ckpt / "latest").read_text() == "step00000004"


def test_newer_step_dirs_set_aside_are_out_of_every_scan(tmp_path):
    """What a resume from an older tag moves aside is kept whole, and no scan, pruning or pointer sees it."""
    from megarecipe.rundir import RunDir

    ckpt = fake_checkpoints(tmp_path / "run" / "checkpoints", "step00000004", "step00000008", "step00000012")
    folder, moved = checkpoint.set_aside_newer(str(ckpt), "step00000004")
    assert moved == ["step00000008", "step00000012"]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints" / "abandoned").iterdir()) == [
        os.path.basename(folder)
    ]
    for tag in moved:
        assert (ckpt / "abandoned" / os.path.basename(folder) / tag / "model.pt").read_bytes() == b"x" * 10
    assert checkpoint.tags(str(ckpt)) == ["step00000004"]
    assert checkpoint.newest_complete(str(ckpt)) == "step00000004"
    assert checkpoint.resume_tag(str(ckpt)) == "step00000004"
    assert checkpoint.set_aside_newer(str(ckpt), "step00000004") is None
    checkpoint.Checkpointer(None, str(ckpt), 0, 1, {})._prune("step00000004")
    assert (ckpt / "abandoned" / os.path.basename(folder) / "step00000008").is_dir()
    assert RunDir(str(tmp_path / "run")).state() == "interrupted"

    fake_checkpoints(ckpt, "step00000008")  # written again, then left again (within the same second, say)
    second, _ = checkpoint.set_aside_newer(str(ckpt), "step00000004")
    assert second != folder and os.path.isdir(os.path.join(second, "step00000008"))


def test_a_resume_from_the_newest_tag_moves_nothing_and_points_latest_at_it(tmp_path):
    """A set-aside killed between its pointer and its renames left `latest` on step 4 beside step 8; the user
    then resumes from step 8 (the newest). A crash before its first save must resume step 8's branch again, not
    step 4 (which would move step 8 aside)."""
    ckpt = fake_checkpoints(tmp_path / "checkpoints", "step00000004", "step00000008")
    (ckpt / checkpoint.POINTER).write_text("step00000004")
    assert checkpoint.set_aside_newer(str(ckpt), "step00000008") is None
    assert checkpoint.tags(str(ckpt)) == ["step00000004", "step00000008"]
    assert not (ckpt / checkpoint.ABANDONED).exists()
    assert checkpoint.resume_tag(str(ckpt)) == "step00000008"


@pytest.mark.parametrize("state", [{"step": 8, "resume_key": {}}, {"step": 8, "rng": {"torch": 0}}, [1, 2]])
def test_a_rank_file_without_what_a_resume_needs_is_one_line(tmp_path, state):
    import torch

    ckpt = fake_checkpoints(tmp_path / "checkpoints", "step00000008")
    torch.save(state, ckpt / "step00000008" / "trainer_rank0.pt")
    with pytest.raises(CheckpointError, match="trainer_rank0.pt loads but lacks the RNG state or the resume key"):
        checkpoint.saved_resume_key(str(ckpt), "step00000008")
