"""Distillation in one process: the objective against the textbook formula, the frozen teacher, the teacher
checks that run before any process starts, and the teacher's place in the resume key."""

import json
import os

import pytest
import torch
import torch.nn.functional as F

from megarecipe.config import ConfigError, ModelConfig, load_config, resolve_layout
from megarecipe.model.export import write_export
from megarecipe.model.reference import Llama
from megarecipe.preflight import check_run
from megarecipe.train.objectives import Distill, Microbatch

SMALL = ModelConfig(
    num_layers=1, hidden_size=32, ffn_hidden_size=64, num_attention_heads=2, num_query_groups=1, seq_len=16
)


def small_config(seq_len=16):
    shape = {**SMALL.__dict__, "seq_len": seq_len}
    return load_config("configs/tiny.yaml", [f"model.{k}={v}" for k, v in shape.items() if v is not None])


def textbook(student, teacher, targets, alpha, t, vocab):
    """alpha T^2 KL(p_T || q_T) over the tokenizer's columns + (1 - alpha) CE over every column, per-token mean."""
    p = F.log_softmax(teacher[..., :vocab] / t, dim=-1)
    q = F.log_softmax(student[..., :vocab] / t, dim=-1)
    kl = (p.exp() * (p - q)).sum(-1).mean()
    ce = F.cross_entropy(student.flatten(0, 1), targets.flatten())
    return alpha * t * t * kl + (1 - alpha) * ce, kl, ce


@pytest.mark.parametrize("alpha,t", [(0.9, 1.0), (0.5, 2.0), (0.0, 1.0)])
def test_objective_is_the_textbook_formula(alpha, t):
    torch.manual_seed(0)
    b, s, vocab, padded = 2, 5, 37, 48
    student = torch.randn(b, s, padded, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(b, s, padded) * 3
    targets = torch.randint(0, vocab, (b, s))
    loss, metrics = Distill(lambda tokens: teacher, alpha, t, vocab)(student, Microbatch(targets, targets))
    want, kl, ce = textbook(student.float(), teacher, targets, alpha, t, vocab)
    assert loss.item() == pytest.approx(want.item(), abs=1e-5)
    assert metrics["distill/kl"].item() == pytest.approx(kl.item(), abs=1e-5)
    assert metrics["distill/ce"].item() == pytest.approx(ce.item(), abs=1e-5)
    (got_grad,) = torch.autograd.grad(loss, student)
    (want_grad,) = torch.autograd.grad(textbook(student, teacher.double(), targets, alpha, t, vocab)[0], student)
    assert torch.allclose(got_grad, want_grad, atol=1e-6)
    assert got_grad[..., vocab:].abs().sum() > 0 if alpha < 1 else True  # CE still sees the padding columns


def test_same_weights_teach_nothing_and_the_teacher_stays_frozen(tmp_path):
    torch.manual_seed(1)
    student = Llama(SMALL, 64)
    tokens = torch.randint(0, 60, (2, 16))
    export = _export(tmp_path / "t", student, small_config(), 64)
    from megarecipe.distill.teacher import Teacher

    teacher = Teacher(str(export.parent), "cpu")
    before = {k: v.clone() for k, v in teacher.models[0].state_dict().items()}
    objective = Distill(teacher, alpha=1.0, temperature=2.0, vocab=60)
    loss, metrics = objective(student(tokens), Microbatch(tokens, tokens))
    assert metrics["distill/kl"].abs().item() < 1e-6
    loss.backward()
    assert max(p.grad.abs().max().item() for p in student.parameters()) < 1e-6  # the KD term's gradient vanishes
    assert all(p.grad is None and not p.requires_grad for p in teacher.models[0].parameters())
    after = teacher.models[0].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not teacher.models[0].training


def _export(run_dir, model, cfg, vocab, tokenizer=None):
    out = run_dir / "export"
    write_export(str(out), model.state_dict(), cfg, vocab, tokenizer_path=tokenizer)
    return out


def _teacher_run(tmp_path, name, tiny_data, seq_len=64, vocab=2048, tokenizer=True):
    cfg = small_config(seq_len)
    m = cfg.model
    run = tmp_path / name
    _export(run, Llama(m, vocab), cfg, vocab, os.path.join(tiny_data, "tokenizer.model") if tokenizer else None)
    return run


def test_teacher_must_match_the_student(tiny_data, tmp_path):
    base = [f"data.dir={tiny_data}", "model.seq_len=64", "data.val_tokens=2048", "data.train_tokens=20000"]

    def error(teacher):
        with pytest.raises(ConfigError) as info:
            check_run(load_config("configs/tiny.yaml", [*base, f"distill.teacher={teacher}"]), world_size=1)
        assert "\n" not in str(info.value)
        return str(info.value)

    good = _teacher_run(tmp_path, "good", tiny_data)
    layout = check_run(load_config("configs/tiny.yaml", [*base, f"distill.teacher={good}"]), world_size=1)
    assert layout.tokenizer_vocab == 2000
    assert "another tokenizer" in error(_teacher_run(tmp_path, "tok", tiny_data, tokenizer=False))
    assert "set model.seq_len=32" in error(_teacher_run(tmp_path, "seq", tiny_data, seq_len=32))
    assert "vocab size 1024" in error(_teacher_run(tmp_path, "voc", tiny_data, vocab=1024))
    assert "neither export/ nor ensemble.json" in error(tmp_path)
    assert "not a directory" in error(tmp_path / "missing")

    ens = tmp_path / "ens"
    ens.mkdir()
    (ens / "ensemble.json").write_text(json.dumps({"members": [str(good), str(tmp_path / "seq")]}))
    assert "member" in error(ens) and "seq" in error(ens)
    with pytest.raises(ConfigError, match="distill.alpha=1.5 must be in"):
        resolve_layout(load_config("configs/tiny.yaml", ["distill.alpha=1.5"]), world_size=1)


def test_teacher_weights_are_in_the_resume_key(tiny_data, tmp_path):
    from megarecipe.distill import teacher
    from megarecipe.train.loop import resume_key

    one, two = _teacher_run(tmp_path, "one", tiny_data), _teacher_run(tmp_path, "two", tiny_data)
    ens = tmp_path / "ens"
    ens.mkdir()
    (ens / "ensemble.json").write_text(json.dumps({"members": [str(one), str(two)]}))

    def key(*overrides):
        cfg = load_config(
            "configs/tiny.yaml", [f"data.dir={tiny_data}", "model.seq_len=64", "data.train_tokens=20000", *overrides]
        )
        return resume_key(cfg, check_run(cfg, world_size=1))

    plain, by_one, by_ens = key(), key(f"distill.teacher={one}"), key(f"distill.teacher={ens}")
    assert plain["distill.teacher_sha256"] is None
    assert len(by_one["distill.teacher_sha256"]) == 1 and len(by_ens["distill.teacher_sha256"]) == 2
    assert by_ens["distill.teacher_sha256"][0] == by_one["distill.teacher_sha256"][0]
    assert by_ens["distill.teacher_sha256"][0] != by_ens["distill.teacher_sha256"][1]  # different random weights
    assert key(f"distill.teacher={one}", "distill.alpha=0.5")["distill.alpha"] == 0.5
    assert teacher.identity(str(ens))["members"] == [str(one), str(two)]

    from megarecipe.config import settings_sha256

    plain_hash = settings_sha256(load_config("configs/tiny.yaml"))
    assert settings_sha256(load_config("configs/tiny.yaml", ["distill.alpha=0.5"])) == plain_hash  # no teacher
    assert settings_sha256(load_config("configs/tiny.yaml", [f"distill.teacher={one}"])) != plain_hash


def _cli(*args):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "tools/distill.py", *map(str, args)], capture_output=True, text=True, timeout=120
    )


def _ports(capsys, monkeypatch, teacher, common) -> bool:
    """Each multi-process run gets a free rendezvous port (deepspeed's fixed default, 29500, made two runs on
    one machine collide), or MASTER_PORT when the caller set one."""
    from megarecipe.cli.distill import main as distill

    def port(**env):
        for k, v in {"MASTER_PORT": None, **env}.items():
            monkeypatch.setenv(k, v) if v else monkeypatch.delenv(k, raising=False)
        assert distill(["train", "--teacher", str(teacher), "--processes", "2", "--dry-run", *map(str, common)]) == 0
        words = capsys.readouterr().out.split()
        return words[words.index("--master_port") + 1]

    free = {port(), port()}
    return len(free) == 2 and "29500" not in free and port(MASTER_PORT="29777") == "29777"


def test_distill_tool_checks_before_spawning_and_reports(tiny_data, tmp_path, capsys, monkeypatch):
    from tests.helpers import write_run

    good = _teacher_run(tmp_path, "good", tiny_data)
    common = [
        "--student",
        "configs/tiny.yaml",
        "--out",
        tmp_path / "kd",
        f"data.dir={tiny_data}",
        "model.seq_len=64",
        "data.train_tokens=20000",
    ]
    ok = _cli("train", "--teacher", good, "--processes", 2, "--alpha", 0.5, "--dry-run", *common)
    assert ok.returncode == 0, ok.stderr
    assert "--num_gpus 2 --master_port " in ok.stdout and "distill.alpha=0.5" in ok.stdout
    assert _ports(capsys, monkeypatch, good, common)
    from megarecipe.cli.distill import main

    for clash in ("run.dir=elsewhere", "distill.teacher=other"):  # the tool's value would silently win
        assert main(["train", "--teacher", str(good), "--dry-run", *map(str, common), clash]) == 2
    bad = _cli("train", "--teacher", _teacher_run(tmp_path, "seq", tiny_data, seq_len=32), *common)
    assert bad.returncode == 2 and bad.stderr.startswith("error: distill.teacher: member")
    assert "Traceback" not in bad.stderr and not (tmp_path / "kd").exists()

    single = write_run(tmp_path / "single", val={10: 3.57})
    ens = write_run(tmp_path / "ens", ensemble={1: 3.5, 8: 3.32})
    student = write_run(tmp_path / "student", val={10: 3.36})
    (tmp_path / "student" / "run.json").write_text(json.dumps({"status": "finished", "distill": {"dir": ens}}))
    out = _cli("report", student, "--single", single)
    assert out.returncode == 0, out.stderr
    assert "retained = (L_single - L_student) / (L_single - L_teacher) = 0.840" in out.stdout
    assert "L_teacher" in out.stdout and "3.3200" in out.stdout
    worse = _cli("report", student, "--single", single, "--teacher", write_run(tmp_path / "t2", val={10: 3.6}))
    assert worse.returncode == 2 and "no better than the single run" in worse.stderr


def test_top_k_cache_with_every_token_is_the_live_teacher(tiny_data, tmp_path):
    from megarecipe.data.dataset import TokenDataset
    from megarecipe.distill.cache import CachedTeacher, build
    from megarecipe.distill.teacher import Teacher

    torch.manual_seed(3)
    run = _teacher_run(tmp_path, "t", tiny_data)
    data = TokenDataset(tiny_data, 64, 1000, seed=5)
    tokens, targets = data.batch(2, 4)
    batch = Microbatch(tokens, targets, ids=torch.as_tensor(data.batch_ids(2, 4)))
    student = torch.randn(4, 64, 2048, requires_grad=True)
    live = Distill(Teacher(str(run), "cpu"), 0.7, 2.0, 2000)(student, batch)[0]
    (want,) = torch.autograd.grad(live, student)
    losses = {}
    for k in (2000, 20):
        info = build(str(run), tiny_data, 64, 1000, k, 2.0, str(tmp_path / f"top{k}"), progress=False)
        assert info["num_sequences"] == 15 and info["teacher"]["members"] == [str(run)]
        cached = CachedTeacher(str(tmp_path / f"top{k}"))
        top = cached(batch)
        assert torch.allclose(top.logp.exp().sum(-1) + top.tail, torch.ones(4, 64), atol=1e-5)
        losses[k] = Distill(cached, 0.7, 2.0, 2000)(student, batch)[0]
    assert losses[2000].item() == pytest.approx(live.item(), abs=1e-5)
    (got,) = torch.autograd.grad(losses[2000], student)
    assert torch.allclose(got, want, atol=1e-6)
    assert losses[20].item() != pytest.approx(live.item(), abs=1e-5) and torch.isfinite(losses[20])

    base = [
        f"data.dir={tiny_data}",
        "model.seq_len=64",
        "data.val_tokens=2048",
        "distill.temperature=2.0",
        "train.global_batch_size=4",
        "train.micro_batch_size=4",
    ]
    cfg = load_config("configs/tiny.yaml", [*base, "data.train_tokens=1000", f"distill.teacher={tmp_path / 'top20'}"])
    check_run(cfg, world_size=1)
    with pytest.raises(ConfigError, match="num_sequences=15, the student needs 31"):
        check_run(
            load_config(
                "configs/tiny.yaml", [*base, "data.train_tokens=2000", f"distill.teacher={tmp_path / 'top20'}"]
            ),
            world_size=1,
        )


def test_cache_never_replaces_a_directory_that_is_not_a_cache(tiny_data, tmp_path, capsys):
    from megarecipe.cli.distill import main

    run = _teacher_run(tmp_path, "t", tiny_data)
    args = [
        "cache",
        "--teacher",
        str(run),
        "--student",
        "configs/tiny.yaml",
        "--k",
        "4",
        f"data.dir={tiny_data}",
        "model.seq_len=64",
        "data.train_tokens=1000",
    ]
    for out in (tmp_path / "notes", run):  # a user's folder, the teacher itself
        (tmp_path / "notes").mkdir(exist_ok=True)
        (tmp_path / "notes" / "keep.txt").write_text("mine")
        before = sorted(p.name for p in out.rglob("*"))
        capsys.readouterr()
        assert main([*args, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --out") and "no teacher cache" in err and err.count("\n") == 1
        assert sorted(p.name for p in out.rglob("*")) == before
    for bad in (["--temperature", "0"], ["--batch-size", "0"], ["--device", "cuda:99"]):  # not a cache
        assert main([*args, *bad, "--out", str(tmp_path / "bad")]) == 2 and not (tmp_path / "bad").exists()
    cache = tmp_path / "cache"
    assert main([*args, "--out", str(cache)]) == 0 and main([*args, "--out", str(cache), "--k", "2"]) == 0
    assert json.loads((cache / "cache.json").read_text())["k"] == 2  # an older cache is rebuilt in place


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_signals_to_distill_train_reach_the_trainer(tiny_data, tmp_path, monkeypatch, sig):
    """`kill TOOL` or Ctrl-C: the trainer gets SIGTERM (and checkpoints) instead of training on after the tool is
    gone, or dying of a SIGINT without a checkpoint."""
    import signal
    import sys
    import threading
    import time

    from megarecipe.cli.distill import main

    ready, stopped = tmp_path / "ready", tmp_path / "stopped"
    trainer = tmp_path / "trainer.sh"  # stands in for `python -m megarecipe.cli.train ...`
    trainer.write_text(
        f"#!/bin/bash\ntrap 'echo TERM > {stopped}; exit 0' TERM\necho $$ > {ready}\nwhile true; do sleep 0.05; done\n"
    )
    trainer.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(trainer))
    monkeypatch.setenv("MEGARECIPE_WARM", "0")  # the cold path: a warm start would not exec sys.executable
    caught = []
    sig = getattr(signal, sig)
    previous = signal.signal(sig, lambda *a: caught.append(a[0]))  # the old code left it to us

    def kill_tool():
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        os.kill(os.getpid(), sig)
        time.sleep(5)
        if ready.exists() and not stopped.exists():  # the trainer did not hear of it: end it here
            os.kill(int(ready.read_text()), signal.SIGKILL)

    thread = threading.Thread(target=kill_tool, daemon=True)
    thread.start()
    try:
        code = main(
            [
                "train",
                "--teacher",
                str(_teacher_run(tmp_path, "t", tiny_data)),
                "--student",
                "configs/tiny.yaml",
                "--out",
                str(tmp_path / "kd"),
                f"data.dir={tiny_data}",
                "model.seq_len=64",
                "data.train_tokens=20000",
            ]
        )
    finally:
        signal.signal(sig, previous)
    assert stopped.exists() and not caught
    assert code == 128 + sig  # the run only stopped (with a checkpoint): not a success


def test_a_damaged_cache_is_refused_before_training(tiny_data, tmp_path):
    import shutil

    from megarecipe.distill.cache import build

    good = tmp_path / "cache"
    build(str(_teacher_run(tmp_path, "t", tiny_data)), tiny_data, 64, 1000, 4, 1.0, str(good), progress=False)
    base = [
        f"data.dir={tiny_data}",
        "model.seq_len=64",
        "data.train_tokens=1000",
        "data.val_tokens=2048",
        "train.global_batch_size=4",
        "train.micro_batch_size=4",
    ]
    for name, damage, fragment in (
        ("cache.json", lambda p: p.write_text("[]"), "cache.json is not a cache's description"),
        ("logp.npy", lambda p: p.write_bytes(p.read_bytes()[:1000]), "logp.npy is missing or damaged"),
        ("ids.npy", lambda p: p.unlink(), "ids.npy is missing or damaged"),
    ):
        bad = tmp_path / f"bad-{name}"
        shutil.copytree(good, bad)
        damage(bad / name)
        with pytest.raises(ConfigError, match=fragment) as info:
            check_run(load_config("configs/tiny.yaml", [*base, f"distill.teacher={bad}"]), world_size=1)
        assert "\n" not in str(info.value) and "rebuild the cache" in str(info.value)


def test_report_uses_the_teacher_that_taught_the_student(tmp_path):
    """The ensemble was re-scored with more members after it taught the student: L_teacher is the loss of the K
    members that taught, not of the larger ensemble; members that no longer match are refused."""
    from megarecipe.analysis.distill import retained
    from megarecipe.analysis.runs import RunReadError
    from tests.helpers import write_run

    ens = write_run(tmp_path / "ens", ensemble={1: 3.5, 2: 3.4, 3: 3.3})
    members = [str(tmp_path / f"m{i}") for i in (1, 2, 3)]
    (tmp_path / "ens" / "ensemble.json").write_text(json.dumps({"members": members}))
    single = write_run(tmp_path / "single", val={10: 3.6})
    student = write_run(tmp_path / "student", val={10: 3.5})
    (tmp_path / "student" / "run.json").write_text(
        json.dumps({"status": "finished", "distill": {"dir": ens, "members": members[:2]}})
    )
    r = retained(student, single)
    assert r.teacher_loss == pytest.approx(3.4) and r.fraction == pytest.approx(0.5)
    (tmp_path / "ens" / "ensemble.json").write_text(json.dumps({"members": [members[0], members[2]]}))
    with pytest.raises(RunReadError, match="no longer begins with the 2 member"):
        retained(student, single)
