import os
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers import REPO

FAKE_TRAINER = f"{sys.executable} {REPO / 'tests' / 'fake_trainer.py'}"


@pytest.fixture(scope="session")
def fake_data(tmp_path_factory):
    """A data dir that passes the config checks (meta.json, a tokenizer file, token files) with no real text:
    for runs of the fake trainer."""
    from megarecipe.data.indexed import write_index
    from megarecipe.data.meta import DataMeta, write_meta
    from megarecipe.data.tokenizer import file_sha256

    d = tmp_path_factory.mktemp("fake_data")
    (d / "tokenizer.model").write_bytes(b"not a real tokenizer")
    n = 200_000
    tokens = np.ones(n, dtype=np.uint16)
    tokens[-1] = 0
    tokens.tofile(d / "train.bin")
    tokens[:20_000].tofile(d / "val.bin")
    (d / "val.bin").write_bytes(tokens[:20_000].tobytes()[:-2] + np.zeros(1, np.uint16).tobytes())
    write_index(str(d / "train.idx"), [n], "uint16")
    write_index(str(d / "val.idx"), [20_000], "uint16")
    write_meta(
        DataMeta(
            dir=str(d),
            vocab_size=256,
            tokenizer_sha256=file_sha256(str(d / "tokenizer.model")),
            dtype="uint16",
            train_tokens=n,
            val_tokens=20_000,
            eos_id=0,
            train_documents=1,
            val_documents=1,
        )
    )
    return str(d)


@pytest.fixture
def fake_trainer(tmp_path, monkeypatch):
    """MEGARECIPE_TRAINER set to the fake; returns the file listing each start."""
    live = tmp_path / "live"
    live.mkdir()
    log = tmp_path / "starts.log"
    monkeypatch.setenv("MEGARECIPE_TRAINER", FAKE_TRAINER)
    monkeypatch.setenv("FAKE_LIVE", str(live))
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return log


def starts(log) -> list[str]:
    return log.read_text().splitlines() if os.path.exists(log) else []


@pytest.fixture(scope="session")
def slurm_conf(tmp_path_factory):
    """A real one-node Slurm (tests/services/slurm.sh), started once per session and stopped after it; the
    tests that use it skip with the script's one-line reason where it cannot run (not root, no apt-get)."""
    from tests.helpers import service

    with service("slurm", tmp_path_factory.mktemp("slurm"), "a local Slurm") as conf:
        yield conf


def wait_for_an_idle_node(slurm_conf: str, timeout: float = 120) -> None:
    """Until no job of an earlier test holds a core (a cancelled job stays COMPLETING for up to KillWait): a test
    that counts which of its tasks run at once needs the whole node, however loaded the machine."""
    deadline = time.time() + timeout
    env = {**os.environ, "SLURM_CONF": slurm_conf}
    while time.time() < deadline:
        jobs = subprocess.run(["squeue", "-h", "-o", "%i %T"], env=env, capture_output=True, text=True)
        if jobs.returncode == 0 and not jobs.stdout.strip():
            return
        time.sleep(0.5)
    pytest.fail(f"the local Slurm still runs jobs of an earlier test after {timeout:.0f} s: {jobs.stdout.strip()}")


@pytest.fixture
def slurm(slurm_conf, fake_trainer, monkeypatch):
    """The real Slurm's clients for this test, with the fake trainer in its jobs; returns the start log."""
    wait_for_an_idle_node(slurm_conf)
    monkeypatch.setenv("SLURM_CONF", slurm_conf)
    monkeypatch.setenv("MEGARECIPE_SLURM_POLL_S", "0.5")
    monkeypatch.setenv("FAKE_TERM_STOPS", "1")
    monkeypatch.setenv("FAKE_SECONDS", "2")
    return fake_trainer
