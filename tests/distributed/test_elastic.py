"""Resume on another layout: a checkpoint of 2 processes (DP=2 under ZeRO-1 or ZeRO-2, or TP=2) continues on
1 process or on the other 2-process layout through DeepSpeed's universal checkpoint, with the losses of the
uninterrupted run; the conversion holds the fp32 weights bit for bit and survives a kill."""

import hashlib
import json
import os
import shutil
import signal

import pytest
import torch
from safetensors.torch import load_file

from megarecipe.launch import warm
from tests.helpers import REPO, env, scalars, train

pytestmark = pytest.mark.slow
SIX = [
    f"data.train_tokens={64 * 16 * 6 + 1}",
    "train.stop_after=null",
    "train.checkpoint_every=3",
    "train.keep_checkpoints=2",
]


def digest(folder) -> dict:
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in sorted(os.listdir(folder))}


def weights_match_export(run_dir, tag):
    """The converted fp32 weights are the finished run's export, bit for bit."""
    export = load_file(run_dir / "export" / "model.safetensors")
    zero = run_dir / "checkpoints" / (tag + ".universal") / "zero"
    assert sorted(os.listdir(zero)) == sorted([*export, "optimizer_state.pt"])
    for name, tensor in export.items():
        converted = torch.load(zero / name / "fp32.pt", weights_only=False)["param"]
        assert converted.dtype == torch.float32 and torch.equal(converted, tensor), name


def continues(full, resumed, steps=(4, 5, 6)):
    """The resumed run's curves are the uninterrupted run's."""
    for tag in ("train/loss", "train/lr"):
        a, b = scalars(full, tag), scalars(resumed, tag)
        assert sorted(b) == sorted(a), tag
        for s in steps:
            assert b[s] == pytest.approx(a[s], abs=1e-5, rel=0), (tag, s, a[s], b[s])
    assert scalars(resumed, "val/loss")[4] == pytest.approx(scalars(full, "val/loss")[4], abs=1e-5, rel=0)


def resume_copy(full, tmp_path, nproc, tiny_data, *layout):
    """The run copied as it was at step 3, resumed with `nproc` processes on `layout`."""
    shutil.copytree(full, tmp_path / "run")
    before = digest(tmp_path / "run" / "checkpoints" / "step00000003")
    run_dir, result = train(
        tmp_path, "run", nproc, tiny_data, *SIX, *layout, "run.resume=true", "run.resume_from=step00000003"
    )
    assert digest(run_dir / "checkpoints" / "step00000003") == before  # the original is only read
    return run_dir, result


@pytest.fixture(scope="module", params=["zero1", "zero2"])
def dp2(request, tiny_data, tmp_path_factory):
    run_dir, _ = train(
        tmp_path_factory.mktemp("dp2"), "full", 2, tiny_data, *SIX, f"parallel.ds_config={request.param}"
    )
    return run_dir, request.param


def kill_mid_conversion(ckpt_dir, tag, log):
    """A conversion killed (SIGKILL) after DeepSpeed's converter wrote the parameter folders."""
    run = warm.start([str(ckpt_dir), tag], env(), str(REPO), str(log), module="tests.distributed.kill_conversion")
    assert run.wait(300) == -signal.SIGKILL, log.read_text()[-2000:]
    return run.pid


def test_dp2_resumes_on_one_process(dp2, tmp_path, tiny_data):
    full, stage = dp2
    ckpt = tmp_path / "run" / "checkpoints"
    shutil.copytree(full, tmp_path / "killed")
    pid = kill_mid_conversion(tmp_path / "killed" / "checkpoints", "step00000003", tmp_path / "kill.log")
    left = tmp_path / "killed" / "checkpoints" / f"step00000003.universal.tmp{pid}"
    assert left.is_dir() and not (tmp_path / "killed" / "checkpoints" / "step00000003.universal").exists()
    assert digest(left.parent / "step00000003") == digest(full / "checkpoints" / "step00000003")
    full_copy = tmp_path / "killed"

    run_dir, result = resume_copy(full_copy, tmp_path, 1, tiny_data, f"parallel.ds_config={stage}")
    assert "from its universal checkpoint" in result.stdout, result.stdout[-2000:]
    assert not (ckpt / left.name).exists() and (ckpt / "step00000003.universal" / "zero").is_dir()
    continues(full, run_dir)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished" and info["facts"]["world_size"] == 1
    change = info["layout_changes"][-1]
    assert change["step"] == 3 and change["from"]["dp"] == 2 and change["to"]["dp"] == 1
    assert torch.load(ckpt / "step00000006" / "trainer_rank0.pt", weights_only=True)["resume_key"]["world_size"] == 1
    a, b = load_file(full / "export" / "model.safetensors"), load_file(run_dir / "export" / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-5, rtol=0) for k in a)


def test_tp2_resumes_as_dp2_and_converts_bit_for_bit(tiny_data, tmp_path, capsys):
    from megarecipe.cli.convert_checkpoint import main as convert_tool

    full, _ = train(tmp_path, "full", 2, tiny_data, *SIX, "parallel.tp=2", "parallel.ds_config=zero1")
    assert convert_tool([str(full), "--tag", "step00000006", "--to-universal"]) == 0
    weights_match_export(full, "step00000006")
    assert convert_tool([str(full), "--tag", "step00000005", "--to-universal"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --tag step00000005: no such checkpoint") and "\n" not in err

    run_dir, _ = resume_copy(full, tmp_path, 2, tiny_data, "parallel.tp=1", "parallel.ds_config=zero1")
    continues(full, run_dir)
    # converting again reuses the conversion; pruning takes it with its tag
    ckpt = run_dir / "checkpoints"
    assert not (ckpt / "step00000006.universal").exists()  # the resumed branch wrote a new step 6
    kept = sorted(n for n in os.listdir(ckpt) if not n.endswith(".py"))  # not DeepSpeed's zero_to_*.py
    assert kept == ["abandoned", "latest", "step00000003", "step00000003.universal", "step00000006"]


def test_dp2_resumes_as_tp2(dp2, tmp_path, tiny_data):
    """The other direction: the universal weights split into TP shards (QKV groups, [gate; up], rows)."""
    full, stage = dp2
    run_dir, _ = resume_copy(full, tmp_path, 2, tiny_data, "parallel.tp=2", f"parallel.ds_config={stage}")
    continues(full, run_dir)
    change = json.loads((run_dir / "run.json").read_text())["layout_changes"][-1]
    assert (change["from"]["tp"], change["to"]["tp"], change["to"]["dp"]) == (1, 2, 1)
