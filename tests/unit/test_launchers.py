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


@pytest.mark.parametrize("host", ["node-1", "gpu_07.cluster.local", "10.0.0.7", "::1", "fe80::1ff:fe23:4567:890a"])
def test_plain_host_names_and_addresses_pass(tmp_path, host):
    assert check_hostfile(write(tmp_path, f"{host} slots=2\n")) == {host: 2}


HOSTILE = ["-oProxyCommand=touch${IFS}pwned", "-lroot", "node$(id)", "node;id", "node`id`", "a${IFS}b",
           "node|id", "nöde", "node\u200b", ".hidden", "node/../x"]


@pytest.mark.parametrize("host", HOSTILE)
def test_hostile_host_names_are_refused(tmp_path, host):
    with pytest.raises(ValueError) as e:
        check_hostfile(write(tmp_path, f"node1 slots=2\n{host} slots=2\n"))
    message = str(e.value)
    assert repr(host) in message and "[A-Za-z0-9_][A-Za-z0-9._-]*" in message and "\n" not in message


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


def test_multinode_launcher_refuses_an_option_as_host_name(tmp_path):
    """ssh would read this name as -oProxyCommand and run `touch pwned`: it must not get that far."""
    hostfile = write(tmp_path, "-oProxyCommand=touch${IFS}pwned slots=1\n")
    result = subprocess.run([str(REPO / "launchers/multinode.sh"), hostfile, str(REPO / "configs/tiny.yaml")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**ENV_PATH, "HOME": "/tmp", "PYTHONPATH": str(REPO)})
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: hostfile") and "-oProxyCommand" in last and "A-Za-z0-9" in last
    assert not (tmp_path / "pwned").exists() and "Traceback" not in result.stderr


@pytest.mark.parametrize("nproc", ["0", "two", "-1"])
def test_local_launcher_refuses_a_bad_process_count(nproc):
    result = run("launchers/local.sh", nproc, "configs/tiny.yaml")
    assert result.returncode == 2 and "NPROC must be a positive integer" in result.stderr


def test_launcher_scripts_parse():
    for script in ("launchers/local.sh", "launchers/multinode.sh", "launchers/slurm.sbatch", "launchers/common.sh"):
        assert run("bash", "-n", script).returncode == 0, script
    assert "eval" not in "".join((REPO / "launchers" / name).read_text() for name in
                                 ("local.sh", "multinode.sh", "slurm.sbatch", "common.sh"))
