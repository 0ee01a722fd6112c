"""Real training runs on real text: several processes over gloo, each layout the trainer supports."""

import glob
import json
import math
import os
import re
import shutil
import signal
import subprocess
import time

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from megarecipe.launch import warm
from megarecipe.rundir import RunDir
from tests.helpers import BIN, REPO, TINY, env, free_port, losses, processes_of, scalars, train

pytestmark = pytest.mark.slow


def assert_falls(values):
    assert len(values) >= 6
    assert values[-1] < values[0] - 0.3, values


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory):
    """One process, ZeRO-0: what every other layout must reproduce."""
    run_dir, _ = train(tmp_path_factory.mktemp("ref"), "ref", 1, tiny_data, "parallel.ds_config=zero0")
    return losses(run_dir)


@pytest.mark.parametrize("ds_config", ["zero1", "zero2", "zero3", "zero2-offload"])
def test_data_parallel_zero_stages(tiny_data, tmp_path, reference, ds_config):
    run_dir, _ = train(tmp_path, ds_config, 2, tiny_data, f"parallel.ds_config={ds_config}")
    got = losses(run_dir)
    assert_falls(got)
    assert got == pytest.approx(reference, abs=2e-4)
    assert set(scalars(run_dir, "val/loss")) == {4, 8}


def assert_mfu_per_device(run_dir, world_size: int):
    """perf/mfu = perf/tokens_per_sec (all ranks) x FLOPs per token / (world size x one device's peak)."""
    perf = RunDir(str(run_dir)).info()["perf"]
    assert perf["world_size"] == world_size and perf["peak_flops_per_device"] > 0
    tokens_per_sec, mfu = scalars(run_dir, "perf/tokens_per_sec"), scalars(run_dir, "perf/mfu")
    assert mfu.keys() == tokens_per_sec.keys() and len(mfu) >= 4
    for step, rate in tokens_per_sec.items():
        expected = rate * perf["flops_per_token"] / (world_size * perf["peak_flops_per_device"])
        assert mfu[step] == pytest.approx(expected, rel=1e-5)


def test_tensor_parallel(tiny_data, tmp_path, reference):
    run_dir, result = train(tmp_path, "tp2", 2, tiny_data, "parallel.tp=2", "train.log_every=2")
    assert losses(run_dir) == pytest.approx(reference[1::2], abs=2e-4)
    assert_mfu_per_device(run_dir, 2)
    # a non-terminal log: one plain line per train.log_every steps from rank 0 alone, no bar, no carriage return
    assert "\r" not in result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("step ")]
    assert [line.split(" | ")[0] for line in lines] == [f"step {s}/{TOTAL_STEPS}" for s in (2, 4, 6, 8)], lines
    mfu = scalars(run_dir, "perf/mfu")
    for line, step in zip(lines, (2, 4, 6, 8), strict=True):
        fields = line.split(" | ")
        assert fields[1] == f"loss {losses(run_dir)[step // 2 - 1]:.4f}"
        assert fields[2].startswith("val ") == (step % 4 == 0)  # train.eval_every=4
        assert f"MFU {100 * mfu[step]:.1f}%" in fields
        memory = [f for f in fields if re.fullmatch(r"mem \d+\.\d\d GiB", f)]
        assert len(memory) == 1 and float(memory[0].split()[1]) > 0
        assert re.fullmatch(r"ETA \d+:\d\d:\d\d", fields[-1]) and re.fullmatch(r"\d+:\d\d:\d\d", fields[-2])
    assert scalars(run_dir, "perf/step_time_s").keys() == {2, 4, 6, 8}
    assert min(scalars(run_dir, "perf/memory_gib").values()) > 0
    assert scalars(run_dir, "train/tokens")[8] == 8 * 16 * 64


def test_pipeline_parallel_zero1_several_microbatches(tiny_data, tmp_path):
    """PP=2 under ZeRO-1 with 4 microbatches per step must equal PP=2 without ZeRO: the regression test of
    the per-backward reset (without it ZeRO-1 fails or drops microbatch gradients)."""
    z1, _ = train(tmp_path, "pp2z1", 2, tiny_data, "parallel.pp=2", "parallel.ds_config=zero1")
    z0, _ = train(tmp_path, "pp2z0", 2, tiny_data, "parallel.pp=2", "parallel.ds_config=zero0")
    assert_falls(losses(z1))
    assert losses(z1) == pytest.approx(losses(z0), abs=2e-4)
    assert scalars(z1, "val/loss").keys() == {4, 8}


def test_tensor_by_data_parallel_zero2_fused_attention(tiny_data, tmp_path, reference):
    """Also the fused attention kernels (model.kernels=sdpa) against the local ones of the reference."""
    run_dir, _ = train(
        tmp_path,
        "tp2dp2",
        4,
        tiny_data,
        "parallel.tp=2",
        "parallel.ds_config=zero2",
        "train.micro_batch_size=2",
        "model.kernels=sdpa",
    )
    assert losses(run_dir) == pytest.approx(reference, abs=2e-4)
    info = RunDir(str(run_dir)).info()
    assert info["kernels"] == "sdpa"
    assert info["heldout"]["val_tokens"] == 2048 and len(info["heldout"]["data_sha256"]) == 64


TOTAL_STEPS = (20000 - 1) // 64 // 16  # TINY's budget in steps (train.stop_after=8 stops before it)

KILLED = ["train.stop_after=null", "train.epochs=2", "train.checkpoint_every=4", "train.eval_every=6"]


@pytest.fixture(scope="module")
def killed_and_resumed(tiny_data, tmp_path_factory):
    """Two ranks: the run whole, and the run killed (SIGKILL to every rank) after a checkpoint, then resumed to the
    end."""
    tmp_path = tmp_path_factory.mktemp("killed")
    whole, _ = train(tmp_path, "whole", 2, tiny_data, *KILLED)

    run_dir = tmp_path / "killed"
    args = ["configs/tiny.yaml", *TINY, *KILLED, f"data.dir={tiny_data}", f"run.dir={run_dir}"]
    job = warm.start(args, env(), str(REPO), os.devnull, os.devnull, processes=2)  # kill -9 through launchers: below
    pointer = run_dir / "checkpoints" / "latest"
    deadline = time.time() + 240
    while time.time() < deadline and not (pointer.exists() and pointer.read_text() >= "step00000008"):
        time.sleep(0.05)
    job.kill()  # SIGKILL to every rank: no checkpoint on the way out
    job.wait(60)
    while processes_of(run_dir) and time.time() < deadline:  # the ranks' exit, which frees run.lock
        time.sleep(0.05)
    assert pointer.exists(), "the run never wrote a checkpoint"
    killed_at = pointer.read_text()
    assert killed_at < "step00000019", "the run finished before it could be killed"

    resumed, _ = train(tmp_path, "killed", 2, tiny_data, *KILLED, "run.resume=true")
    return whole, resumed


def test_killed_run_resumes_exactly(killed_and_resumed):
    whole, resumed = killed_and_resumed
    want, got = scalars(whole, "train/loss"), scalars(resumed, "train/loss")
    assert sorted(got) == sorted(want)
    acc = EventAccumulator(str(resumed / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    steps = [e.step for e in acc.Scalars("train/loss")]
    assert len(steps) == len(set(steps)), "a resumed run left duplicate steps"
    assert [got[s] for s in sorted(got)] == [want[s] for s in sorted(want)]  # bit-identical on CPU
    assert scalars(resumed, "val/loss") == scalars(whole, "val/loss")


class Foreign:
    """Not a type torch.load(weights_only=True) accepts."""


def test_an_error_on_one_rank_alone_is_printed_with_its_rank(killed_and_resumed, tiny_data, tmp_path):
    """Rank 1 alone reads its trainer file: when that file is unreadable (yet passes the manifest and CRC checks
    every rank shares), the run's stderr shows rank 1's one-line error, named as rank 1's."""
    run_dir = tmp_path / "run"
    shutil.copytree(killed_and_resumed[1], run_dir)
    ckpt = run_dir / "checkpoints"
    older = sorted(p.name for p in ckpt.glob("step*"))[-2]
    torch.save({"step": 0, "foreign": Foreign()}, ckpt / older / "trainer_rank1.pt")
    manifest = json.loads((ckpt / older / "manifest.json").read_text())
    manifest["files"]["trainer_rank1.pt"] = (ckpt / older / "trainer_rank1.pt").stat().st_size
    (ckpt / older / "manifest.json").write_text(json.dumps(manifest))

    _, result = train(
        tmp_path, "run", 2, tiny_data, *KILLED, "run.resume=true", f"run.resume_from={older}", check=False
    )  # warm: the launchers pass the ranks' stderr through (test_signals_and_kill_9...)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert lines[0].startswith(f"error (rank 1): cannot resume from {ckpt / older}: trainer_rank1.pt is unreadable"), (
        result.stderr[-3000:]
    )
    # rank 0, left waiting for rank 1, says only that (no traceback), and so does run.json
    assert all(line.startswith("error: stopped: another rank is gone") for line in lines[1:]), lines
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    info = RunDir(str(run_dir)).info()
    assert info["status"] == "failed" and info["error"].startswith("another rank stopped"), info


def test_existing_run_is_not_overwritten(tiny_data, tmp_path, reference):
    # no launcher at all; W&B in offline mode beside TensorBoard
    run_dir, _ = train(
        tmp_path,
        "once",
        0,
        tiny_data,
        "parallel.ds_config=zero0",
        "logging.wandb=true",
        extra_env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"},
    )
    assert losses(run_dir) == pytest.approx(reference, abs=1e-6)
    assert_mfu_per_device(run_dir, 1)
    [records] = glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))
    with open(records, "rb") as f:
        data = f.read()
    assert all(tag in data for tag in (b"train/loss", b"perf/mfu", b"val/loss", b"train_tokens"))
    _, result = train(tmp_path, "once", 0, tiny_data, check=False)
    assert result.returncode != 0 and "run.resume=true" in result.stderr


def test_resume_with_a_layout_the_converter_cannot_do_is_refused(tiny_data, tmp_path):
    """Another world size or TP size resumes (test_elastic.py); a pipeline of stages does not."""
    train(tmp_path, "one", 1, tiny_data, "train.stop_after=2")
    _, result = train(tmp_path, "one", 2, tiny_data, "run.resume=true", "parallel.pp=2", check=False)
    assert result.returncode != 0
    assert "cannot resume step00000002 on another layout" in result.stderr and "pp 1 -> 2" in result.stderr
    assert "Traceback" not in result.stderr
    _, result = train(tmp_path, "one", 1, tiny_data, "run.resume=true", "run.seed=7", check=False)
    assert result.returncode != 0 and "seed 1234 -> 7" in result.stderr


def nan_at(step: int) -> tuple:
    """The trainer with its training loss made NaN at one step: tests/distributed/inject_nan.py."""
    return ("-m", "tests.distributed.inject_nan", str(step))


def test_nonfinite_loss_stops_with_the_step(tiny_data, tmp_path):
    _, result = train(tmp_path, "nan", 2, tiny_data, program=nan_at(3), check=False)
    assert result.returncode != 0
    assert "non-finite training loss (nan) at step 3" in result.stderr
    # the ranks agreed on it: rank 0's line, once, and no copy from rank 1
    assert [line for line in result.stderr.splitlines() if line.startswith("error")] == [
        "error: non-finite training loss (nan) at step 3; lower optim.lr, or set train.on_nonfinite=skip to drop "
        "such batches"
    ]


def test_nonfinite_loss_skipped_when_asked(tiny_data, tmp_path, reference):
    z1, _ = train(tmp_path, "skip1", 2, tiny_data, "train.on_nonfinite=skip", program=nan_at(3))
    z2, _ = train(
        tmp_path, "skip2", 2, tiny_data, "train.on_nonfinite=skip", "parallel.ds_config=zero2", program=nan_at(3)
    )
    for run_dir in (z1, z2):
        assert scalars(run_dir, "train/skipped_batches") == {3: 1.0}
        got = scalars(run_dir, "train/loss")
        assert 3 not in got and got[2] == pytest.approx(reference[1], abs=2e-4)
        assert_falls([got[s] for s in sorted(got)])
        assert all(math.isfinite(v) for v in scalars(run_dir, "train/grad_norm").values())
    # ZeRO-2's partitioned gradient buffers must not carry the bad batch into the next step
    assert losses(z2) == pytest.approx(losses(z1), abs=2e-4)

    last, _ = train(tmp_path, "skip_last", 2, tiny_data, "train.on_nonfinite=skip", program=nan_at(8))
    assert (last / "checkpoints" / "latest").read_text() == "step00000008"
    assert 8 in scalars(last, "val/loss")


def test_bad_layout_fails_before_any_process_group(tiny_data, tmp_path):
    """Rank 0 of a world of 2 with no peer: building a process group would hang, so a prompt exit with the
    one-line error shows the check ran first."""
    cmd = [
        str(BIN / "python"),
        "-m",
        "megarecipe.cli.train",
        "configs/tiny.yaml",
        *TINY,
        f"data.dir={tiny_data}",
        f"run.dir={tmp_path / 'bad'}",
        "parallel.pp=2",
        "parallel.ds_config=zero2",
    ]
    world = {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }
    result = subprocess.run(cmd, cwd=REPO, env={**env(), **world}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: parallel.pp=2 with ZeRO stage 2 is not supported")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("layout", [["parallel.tp=2"], ["parallel.pp=2"], ["parallel.ds_config=zero3"]])
def test_export_loads_without_deepspeed_and_reproduces_val_loss(tiny_data, tmp_path, layout):
    """The export of a sharded run, loaded into the plain-PyTorch Llama, gives the trainer's final val/loss."""
    from megarecipe.analysis.heldout import validation_loss
    from megarecipe.model.export import load_export

    run_dir, _ = train(tmp_path, "exp", 2, tiny_data, "train.stop_after=null", *layout)
    model, cfg, info = load_export(str(run_dir / "export"))
    val = scalars(run_dir, "val/loss")
    final = val[max(val)]
    got = validation_loss(model, tiny_data, cfg.model.seq_len, max_tokens=cfg.data.val_tokens)
    assert got == pytest.approx(final, abs=2e-4)
    assert info["params"] == int(scalars(run_dir, "run/params")[0])
    assert (run_dir / "export" / "tokenizer.model").exists()


def test_bf16_tracks_fp32(tiny_data, tmp_path, reference):
    """The GPU precision path (bf16 compute, fp32 master weights in ZeRO), run on CPU."""
    run_dir, _ = train(
        tmp_path, "bf16", 2, tiny_data, "train.precision=bf16", "parallel.ds_config=zero1", "train.stop_after=null"
    )
    got = losses(run_dir)
    assert_falls(got)
    assert got[:8] == pytest.approx(reference, abs=2e-3)
    import torch
    from safetensors.torch import load_file

    weights = load_file(str(run_dir / "export" / "model.safetensors"))["output_layer.weight"]
    assert weights.dtype == torch.float32
    assert not torch.equal(weights, weights.bfloat16().float()), "the export holds bf16-rounded weights"


def test_fit_tool_reads_trainer_runs(tiny_data, tmp_path, capsys):
    """The scaling-fit tool reads finished trainer runs from their directories alone."""
    from megarecipe.cli.fit_scaling import main as fit_scaling

    runs = []
    for hidden, ffn in ((32, 96), (64, 176), (96, 256)):  # 8 steps each, evaluated at the end
        run_dir, _ = train(
            tmp_path,
            f"size-{hidden}",
            1,
            tiny_data,
            "train.stop_after=null",
            "data.train_tokens=8192",
            "train.eval_every=1000",
            f"model.hidden_size={hidden}",
            f"model.ffn_hidden_size={ffn}",
        )
        runs.append(str(run_dir))
    out = tmp_path / "report"
    assert fit_scaling([*runs, "--over", "params", "--out", str(out), "--bootstrap", "20", "--no-progress"]) == 0, (
        capsys.readouterr().err
    )
    fits = json.loads((out / "fits.json").read_text())
    text = json.dumps(fits)
    for run in runs:
        assert os.path.basename(run) in text
    assert (out / "report.md").exists() and list(out.glob("*.png"))


def test_signals_and_kill_9_of_the_launchers_checkpoint_and_the_run_resumes_exactly(tiny_data, tmp_path):
    """One run, stopped three ways and resumed each time: a user's `kill` (or `timeout`) of launchers/local.sh,
    kill -9 of local.sh, kill -9 of DeepSpeed's runner under it (local.sh runs the command users type, `deepspeed
    --num_gpus 2 --module megarecipe.cli.train ...`). Each time every rank checkpoints at a step boundary and
    exits within seconds (no process holds the run); the run then resumes to the losses of an uninterrupted one.
    (A scheduler's SIGTERM through torchrun: tests/launch/test_slurm.py, through srun and torchrun.)"""
    from tests.helpers import pid_parent

    extra = ["train.stop_after=null", "train.epochs=4", "train.eval_every=10"]  # 77 steps
    whole, _ = train(tmp_path, "whole", 2, tiny_data, *extra)
    common = [*TINY, f"data.dir={tiny_data}", *extra]
    run_dir = tmp_path / "stopped"
    pointer = run_dir / "checkpoints" / "latest"
    local_sh = [
        str(REPO / "launchers" / "local.sh"),
        "2",
        "configs/tiny.yaml",
        *common,
        f"run.dir={run_dir}",
        "run.resume=true",
    ]
    log = open(tmp_path / "launch.log", "w+")
    checkpoints = []

    def stop(command, victim, sig):
        events = len(list((run_dir / "tb").glob("events*")))
        proc = subprocess.Popen(
            command, cwd=REPO, env={**env(), "MASTER_PORT": str(free_port())}, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.time() + 120
            while time.time() < deadline and len(list((run_dir / "tb").glob("events*"))) <= events:
                assert proc.poll() is None, f"the run ended before {victim} could be stopped"
                time.sleep(0.1)
            time.sleep(1.0)
            ranks = [p for p in processes_of(run_dir) if p != proc.pid]
            assert len(ranks) >= 2, "the ranks are not up"
            target = proc.pid
            if victim == "deepspeed's runner":
                target = [p for p in ranks if pid_parent(p) == proc.pid][0]
            os.kill(target, sig)
            sent = time.time()
            while processes_of(run_dir) and time.time() - sent < 45:
                time.sleep(0.2)
            took, left = time.time() - sent, processes_of(run_dir)
            status = proc.wait(timeout=60)
        finally:
            for pid in processes_of(run_dir):
                os.kill(pid, signal.SIGKILL)
        log.seek(0)
        output = log.read()
        assert not left and took < 30, f"after {signal.Signals(sig).name} of {victim}: {left} left after {took:.0f} s"
        assert RunDir(str(run_dir)).info()["status"] == "stopped", output[-3000:]
        checkpoints.append(pointer.read_text())
        return status, output

    status, output = stop(local_sh, "local.sh", signal.SIGTERM)  # to the script alone, as `kill PID` sends it
    assert status == 143 and "stopped on a signal" in output, output[-3000:]
    stop(local_sh, "local.sh", signal.SIGKILL)
    stop(local_sh, "deepspeed's runner", signal.SIGKILL)
    assert "step00000001" <= checkpoints[0] <= checkpoints[1] <= checkpoints[2] < "step00000077"
    assert checkpoints[0] < checkpoints[2], checkpoints

    train(tmp_path, "stopped", 2, tiny_data, *extra, "run.resume=true")  # to the end, started warm
    assert RunDir(str(run_dir)).info()["status"] == "finished"
    assert scalars(run_dir, "train/loss") == scalars(whole, "train/loss")
    assert scalars(run_dir, "run/world_size") == {0: 2.0}


def test_ensemble_of_trained_members(tiny_ensemble, tmp_path):
    """`ensemble.py train --members 3 --parallel 2` (members differing only by seed) -> `eval` of the
    logit-averaged ensemble (both in the tiny_ensemble fixture) -> L(K) events the fit tool reads."""
    import json

    tool = [str(BIN / "python"), "tools/ensemble.py"]
    ens = tiny_ensemble
    members = [str(ens / "members" / f"seed{seed}") for seed in (1, 2, 3)]
    by_k = scalars(ens, "ensemble/val_loss")
    finals = [scalars(m, "val/loss")[max(scalars(m, "val/loss"))] for m in members]
    assert sorted(by_k) == [1, 2, 3]
    assert len(set(finals)) == 3  # the seeds made different models
    assert by_k[1] == pytest.approx(finals[0], abs=2e-4)  # one member is that member's own val/loss
    assert by_k[2] < (finals[0] + finals[1]) / 2  # two seeds beat their mean
    assert by_k[3] <= sum(finals) / 3 + 1e-6  # Jensen: averaging logits never hurts on average
    assert scalars(ens, "run/params")[0] == scalars(members[0], "run/params")[0]
    info = json.loads((ens / "run.json").read_text())
    assert (info["status"], info["kind"], len(info["members"])) == ("finished", "ensemble", 3)
    assert (ens / "loss_vs_members.png").stat().st_size > 0

    report = tmp_path / "report"
    fit = subprocess.run(
        [
            str(BIN / "python"),
            "tools/fit_scaling.py",
            str(ens),
            "--over",
            "members",
            "--out",
            str(report),
            "--bootstrap",
            "10",
            "--no-progress",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert fit.returncode == 0, fit.stderr
    assert json.loads((report / "fits.json").read_text())

    bad = subprocess.run(
        [*tool, "eval", "--runs", str(tmp_path / "nope"), "--out", str(tmp_path / "x")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr


def test_killed_member_is_resumed_by_the_next_train(tiny_data, tmp_path, capsys, monkeypatch):
    """SIGKILL to `ensemble.py train` (and its member) after the member's first checkpoint: status reports it
    interrupted, and the same `train` again resumes it to the end."""
    from megarecipe.rundir import RunDir

    ens = tmp_path / "ens"
    member = ens / "members" / "seed1"
    cmd = [
        str(BIN / "python"),
        "tools/ensemble.py",
        "train",
        "configs/tiny.yaml",
        "--members",
        "1",
        "--out",
        str(ens),
        *TINY,
        f"data.dir={tiny_data}",
        "train.stop_after=null",
        "train.checkpoint_every=2",
        "data.train_tokens=8000",
    ]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env(), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 300
        while not (member / "checkpoints" / "latest").exists() and proc.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 60  # the trainer holds the run's lock until the kernel has ended it
    while RunDir(str(member)).state() == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert RunDir(str(member)).state() == "interrupted"
    # the status and the second train in this process, as the same tool: its member starts warm
    from megarecipe.cli.ensemble import main

    monkeypatch.chdir(REPO)
    assert main(["status", str(ens)]) == 0
    assert "seed1   interrupted" in capsys.readouterr().out
    assert main(cmd[2:]) == 0, capsys.readouterr()
    info = RunDir(str(member)).info()
    assert info["status"] == "finished" and info["final"]["step"] == info["facts"]["total_steps"]
    log = (member / "train.log").read_text()
    assert log.count("== launch attempt") == 2
    # resumed, not restarted: a restart from step 0 removes the first attempt's event file, a resume adds one
    assert len([f for f in os.listdir(member / "tb") if "tfevents" in f]) == 2
    assert len(losses(member)) == info["facts"]["total_steps"]
