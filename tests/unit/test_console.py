"""Rank 0's log line, plain when not on a terminal, and the third-party bars a recipe turns off."""

import os
import re
import subprocess
import sys

import torch

from megarecipe.train.console import Console, log_line, memory_bytes


def test_log_line_holds_what_a_pretrainer_reads():
    line = log_line(
        step=40,
        total=400,
        loss=3.21041,
        lr=2.97e-3,
        grad_norm=0.8421,
        tokens_per_sec=10_312.0,
        mfu=0.4189,
        memory=int(1.21 * 2**30),
        elapsed=12.4,
        eta=108.0,
        val_loss=3.3,
    )
    assert line == (
        "step 40/400 | loss 3.2104 | val 3.3000 | lr 2.97e-03 | grad 0.842 | 10.3k tok/s | MFU 41.9% | "
        "mem 1.21 GiB | 0:00:12 | ETA 0:01:48"
    )
    assert "grad -" in log_line(1, 2, 1.0, 1e-3, None, 5.0, 0.0, 0, 0.0, 0.0)


def test_console_prints_plain_lines_without_a_terminal(capsys):
    console = Console(enabled=True, total=10, start=0, end=10, bar=True)  # pytest's stderr is no terminal
    assert console.bar is None
    console.line("step 1/10 | loss 1.0000")
    console.advance(1.0, None)
    console.close()
    out = capsys.readouterr()
    assert out.out == "step 1/10 | loss 1.0000\n" and out.err == ""
    quiet = Console(enabled=False, total=10, start=0, end=10, bar=True)  # other ranks
    quiet.line("nothing")
    assert capsys.readouterr().out == ""


def test_eta_from_the_steps_this_process_ran(monkeypatch):
    clock = iter([100.0, 110.0])
    monkeypatch.setattr("megarecipe.train.console.time.perf_counter", lambda: next(clock))
    console = Console(enabled=True, total=100, start=20, end=60, bar=False)  # resumed at 20, stop_after 60
    assert console.eta(30) == (10.0, 30.0)  # 10 steps in 10 s, 30 to go


def test_memory_is_the_resident_set_on_cpu():
    held = memory_bytes(torch.device("cpu"))
    with open("/proc/self/status") as f:
        rss_kib = int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1))
    assert abs(held - rss_kib * 1024) < 64 * 2**20


def test_recipe_turns_off_third_party_progress_bars():
    code = (
        "from megarecipe.system import quiet_progress_bars; quiet_progress_bars()\n"
        "import datasets, tqdm\n"
        "assert tqdm.tqdm(range(3)).disable\n"
        "assert not datasets.utils.logging.is_progress_bar_enabled()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_recipe_main_quiets_before_it_imports(tmp_path, monkeypatch):
    from megarecipe.cli import recipe

    monkeypatch.setenv("TQDM_DISABLE", "0")
    assert recipe.main([str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "out")]) == 2
    assert os.environ["TQDM_DISABLE"] == "1"
