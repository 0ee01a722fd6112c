"""Launchers: a malformed hostfile or argument is refused with one line, before anything launches."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from megarecipe.cli.check_hostfile import check_hostfile
from tests.helpers import REPO

ENV_PATH = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}


def write(tmp_path, text):
    path = tmp_path / "hostfile"
    path.write_text(text)
    return str(path)


def test_good_hostfile(tmp_path):
    assert check_hostfile(write(tmp_path, "# nodes\nnode1 slots=8\n\nnode2 slots=4\n")) == {"node1": 8, "node2": 4}


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("node1 slots=8\nnode2 slots=four\n", "bad entry: node2 slots=four"),
        ("node1 slots=8\nnode1 slots=8\n", "multiple entries for node1"),
        ("# only a comment\n", "empty or not formatted correctly"),
        ("node1 slots=0\n", "node1 has slots=0"),
        ("node1\n", "bad entry: node1"),
        ("\ufeffnode1 slots=2\n", "starts with a byte-order mark; save it as UTF-8 without a BOM"),
    ],
)
def test_bad_hostfiles(tmp_path, text, fragment):
    with pytest.raises(ValueError, match=fragment):
        check_hostfile(write(tmp_path, text))


@pytest.mark.parametrize("host", ["node-1", "gpu_07.cluster.local", "10.0.0.7", "::1", "fe80::1ff:fe23:4567:890a"])
def test_plain_host_names_and_addresses_pass(tmp_path, host):
    assert check_hostfile(write(tmp_path, f"{host} slots=2\n")) == {host: 2}


HOSTILE = [
    "-oProxyCommand=touch${IFS}pwned",
    "-lroot",
    "node$(id)",
    "node;id",
    "node`id`",
    "a${IFS}b",
    "node|id",
    "nöde",
    "node\u200b",
    ".hidden",
    "node/../x",
]


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
    return subprocess.run(
        list(args), cwd=REPO, capture_output=True, text=True, timeout=120, env={**ENV_PATH, "HOME": "/tmp"}
    )


def test_check_hostfile_stdout_is_its_own_output_alone(tmp_path):
    """DeepSpeed logs its accelerator choice to stdout when imported (no DS_ACCELERATOR, no visible GPU);
    multinode.sh reads this tool's stdout (a bad file: test_multinode_launcher_refuses_a_bad_hostfile)."""
    env = {**ENV_PATH, "HOME": "/tmp", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    tool = [sys.executable, "tools/check_hostfile.py"]
    good = subprocess.run(
        [*tool, write(tmp_path, "# two nodes\nnode1 slots=2\nnode2 slots=4\n")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (good.returncode, good.stdout) == (0, "2 node(s), 6 process(es): node1=2, node2=4\n"), good.stderr


def test_multinode_launcher_refuses_a_bad_hostfile(tmp_path):
    """DeepSpeed's parser refuses it; the launcher prints its one line, not DeepSpeed's log dump."""
    result = run("launchers/multinode.sh", write(tmp_path, "node1 slots=x\n"), "configs/tiny.yaml")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: hostfile") and "slots=x" in result.stderr


def test_multinode_launcher_refuses_an_option_as_host_name(tmp_path):
    """ssh would read this name as -oProxyCommand and run `touch pwned`: it must not get that far."""
    hostfile = write(tmp_path, "-oProxyCommand=touch${IFS}pwned slots=1\n")
    result = subprocess.run(
        [str(REPO / "launchers/multinode.sh"), hostfile, str(REPO / "configs/tiny.yaml")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**ENV_PATH, "HOME": "/tmp", "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: hostfile") and "-oProxyCommand" in last and "A-Za-z0-9" in last
    assert not (tmp_path / "pwned").exists() and "Traceback" not in result.stderr


@pytest.mark.parametrize("arg", ["run.dir=/tmp/x;touch${IFS}pwned", "run.dir=$(touch pwned)", "run.dir=it's"])
def test_multinode_launcher_refuses_shell_syntax_for_remote_hosts(tmp_path, fake_launcher, arg):
    """pdsh runs the trainer's arguments through each host's shell unquoted: `$(...)` or `;` would run there."""
    hostfile = write(tmp_path, "node1 slots=1\nnode2 slots=1\n")
    result = subprocess.run(
        [str(REPO / "launchers/multinode.sh"), hostfile, "configs/tiny.yaml", arg],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=fake_launcher,
    )
    assert result.returncode == 2 and launch_log(fake_launcher) == "", result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: argument '{arg}'"), result.stderr


@pytest.mark.parametrize("nproc", ["0", "two", "-1"])
def test_local_launcher_refuses_a_bad_process_count(nproc):
    result = run("launchers/local.sh", nproc, "configs/tiny.yaml")
    assert result.returncode == 2 and "NPROC must be a positive integer" in result.stderr


def test_launcher_scripts_parse():
    for script in ("launchers/local.sh", "launchers/multinode.sh", "launchers/slurm.sbatch", "launchers/common.sh"):
        assert run("bash", "-n", script).returncode == 0, script
    assert "eval" not in "".join(
        (REPO / "launchers" / name).read_text() for name in ("local.sh", "multinode.sh", "slurm.sbatch", "common.sh")
    )


# A stand-in for DeepSpeed's runner: it handles no signal itself (as the real one on one node) and starts a
# "rank" that logs its arguments and the signals it gets, then exits 0.
FAKE_DEEPSPEED = """#!{python}
import os, signal, subprocess, sys, time
log = os.environ["FAKE_LOG"]
if sys.argv[1] != "--rank":
    with open(log, "a") as f:
        f.write("launched " + " ".join(sys.argv[1:]) + "\\n")
    sys.exit(subprocess.call([sys.executable, __file__, "--rank"]))
def stop(signum, frame):
    with open(log, "a") as f:
        f.write("rank got " + signal.Signals(signum).name + "\\n")
    sys.exit(0)
for s in (signal.SIGTERM, signal.SIGUSR1):
    signal.signal(s, stop)
with open(log, "a") as f:
    f.write("rank ready\\n")
time.sleep(60)
"""


@pytest.fixture
def fake_launcher(tmp_path):
    """env for launchers/*.sh that puts the fake deepspeed first on PATH; its log is tmp_path/launch.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "deepspeed").write_text(FAKE_DEEPSPEED.format(python=sys.executable))
    (bin_dir / "deepspeed").chmod(0o755)
    venv = Path(sys.executable).parent
    return {
        "PATH": f"{bin_dir}:{venv}:/usr/bin:/bin",
        "VIRTUAL_ENV": str(venv.parent),
        "HOME": "/tmp",
        "PYTHONPATH": str(REPO),
        "FAKE_LOG": str(tmp_path / "launch.log"),
    }


def launch_log(env) -> str:
    return Path(env["FAKE_LOG"]).read_text() if os.path.exists(env["FAKE_LOG"]) else ""


@pytest.mark.parametrize(
    "script,setting,message",
    [
        ("local.sh", "model.hidden_size=130", "error: model.hidden_size=130 is not divisible"),
        ("local.sh", "parallel.tp=4", "error: model.num_query_groups=2 is not divisible by parallel.tp=4"),
        ("multinode.sh", "train.global_batch_size=24", "error: train.global_batch_size=24 is not a multiple"),
    ],
)
def test_a_bad_setting_is_refused_before_any_process_starts(tmp_path, fake_launcher, script, setting, message):
    first = "2" if script == "local.sh" else write(tmp_path, "localhost slots=2\n")
    result = subprocess.run(
        [f"launchers/{script}", first, "configs/tiny.yaml", setting],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=fake_launcher,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(message) and "Traceback" not in result.stderr
    assert launch_log(fake_launcher) == "", "the launcher was started"


@pytest.mark.parametrize("sig,status", [(signal.SIGTERM, 143), (signal.SIGUSR1, 0)])
def test_local_launcher_passes_signals_on_and_leaves_no_process(tmp_path, tiny_data, fake_launcher, sig, status):
    cmd = [
        "launchers/local.sh",
        "2",
        "configs/tiny.yaml",
        f"data.dir={tiny_data}",
        "data.train_tokens=20000",
        f"run.dir={tmp_path / 'unique-run'}",
    ]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=fake_launcher, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 60
    while "rank ready" not in launch_log(fake_launcher) and time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    try:
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == status
    finally:
        leftover = [int(p) for p in os.listdir("/proc") if p.isdigit() and _cmdline_has(p, str(tmp_path / "bin"))]
        for pid in leftover:
            os.kill(pid, signal.SIGKILL)
    assert leftover == []
    log = launch_log(fake_launcher)
    assert log.startswith("launched --num_gpus 2 --log_level error --module megarecipe.cli.train configs/tiny.yaml")
    assert log.endswith(f"rank got {sig.name}\n")


def _cmdline_has(pid: str, text: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return text.encode() in f.read()
    except OSError:
        return False
