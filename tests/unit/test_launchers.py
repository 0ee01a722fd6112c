"""Launchers: a malformed hostfile or argument is refused with one line, before anything launches."""
import subprocess
import sys
from pathlib import Path

import pytest

from megarecipe.hostfile import check_hostfile

from tests.helpers import REPO
ENV_PATH = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}


def write(tmp_path, text):
    path = tmp_path / "hostfile"
    path.write_text(text)
    return str(path)


def test_good_hostfile(tmp_path):
    assert check_hostfile(write(tmp_path, "# nodes\nnode1 slots=8\n\nnode2 slots=4\n")) == {"node1": 8, "node2": 4}


@pytest.mark.parametrize("text,fragment", [
    ("node1 slots=8\nnode2 slots=four\n", "bad entry: node2 slots=four"),
    ("node1 slots=8\nnode1 slots=8\n", "multiple entries for node1"),
    ("# only a comment\n", "empty or not formatted correctly"),
    ("node1 slots=0\n", "node1 has slots=0"),
    ("node1\n", "bad entry: node1"),
])
def test_bad_hostfiles(tmp_path, text, fragment):
    with pytest.raises(ValueError, match=fragment):
        check_hostfile(write(tmp_path, text))


def test_missing_hostfile_is_an_error_not_a_local_fallback(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        check_hostfile(str(tmp_path / "nope"))


def run(*args):
    return subprocess.run(list(args), cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**ENV_PATH, "HOME": "/tmp"})


def test_multinode_launcher_refuses_a_bad_hostfile(tmp_path):
    result = run("launchers/multinode.sh", write(tmp_path, "node1 slots=x\n"), "configs/tiny.yaml")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: hostfile") and "Traceback" not in result.stderr


@pytest.mark.parametrize("nproc", ["0", "two", "-1"])
def test_local_launcher_refuses_a_bad_process_count(nproc):
    result = run("launchers/local.sh", nproc, "configs/tiny.yaml")
    assert result.returncode == 2 and "NPROC must be a positive integer" in result.stderr


def test_launcher_scripts_parse():
    for script in ("launchers/local.sh", "launchers/multinode.sh", "launchers/slurm.sbatch", "launchers/common.sh"):
        assert run("bash", "-n", script).returncode == 0, script
    assert "eval" not in "".join((REPO / "launchers" / name).read_text() for name in
                                 ("local.sh", "multinode.sh", "slurm.sbatch", "common.sh"))
