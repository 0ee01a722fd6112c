import subprocess

import pytest

from tests.helpers import BIN, REPO, TINY, env


@pytest.fixture(scope="session")
def tiny_ensemble(tiny_data, tmp_path_factory):
    """`ensemble.py train --members 3 --parallel 2` of the tiny shape for its whole schedule (seeds 1-3), then
    `ensemble.py eval` (ensemble.json, L(K) events): the ensemble tests and the ensemble-teacher student share it."""
    ens = tmp_path_factory.mktemp("ensemble") / "ens"
    tool = [str(BIN / "python"), "tools/ensemble.py"]
    for args in (["train", "configs/tiny.yaml", "--members", "3", "--parallel", "2", "--out", str(ens), *TINY,
                  f"data.dir={tiny_data}", "train.stop_after=null"], ["eval", str(ens), "--no-progress"]):
        done = subprocess.run([*tool, *args], cwd=REPO, env=env(), capture_output=True, text=True, timeout=400)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return ens
