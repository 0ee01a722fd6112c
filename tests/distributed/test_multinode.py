"""launchers/multinode.sh over real ssh: DeepSpeed's pdsh runner starts one rank on each of two "nodes" (the
ssh_nodes fixture: both this machine, through an sshd of the session's own)."""

import os
import signal
import subprocess
import time

import pytest

from megarecipe.rundir import RunDir
from megarecipe.system import free_port
from tests.helpers import REPO, TINY, env, losses, processes_of, train


def multinode(tmp_path, ssh_nodes, *args) -> tuple[list[str], dict]:
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node-a slots=1\nnode-b slots=1\n")
    env_file = tmp_path / "deepspeed_env"
    env_file.write_text("OMP_NUM_THREADS=1\nDS_ACCELERATOR=cpu\n")
    return (
        [str(REPO / "launchers" / "multinode.sh"), str(hostfile), "configs/tiny.yaml", *TINY, *args],
        {
            **env(),
            "PATH": f"{ssh_nodes}{os.pathsep}{os.environ['PATH']}",
            "DS_ENV_FILE": str(env_file),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(free_port()),
        },
    )


def rank_of(pid: int) -> str | None:
    try:
        environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    except OSError:
        return None
    return next((e[5:].decode() for e in environ if e.startswith(b"RANK=")), None)


@pytest.mark.slow
def test_two_nodes_over_ssh_train_to_the_losses_of_one_node(tmp_path, tiny_data, ssh_nodes):
    """2 nodes x 1 process (pdsh -> ssh -> deepspeed.launcher.launch on each) ends with the losses of 1 node x 2.
    What the ranks need from this environment goes to them in the file DS_ENV_FILE names, DeepSpeed's way."""
    reference, _ = train(tmp_path, "one_node", 2, tiny_data)
    run_dir = tmp_path / "two_nodes"
    cmd, environment = multinode(tmp_path, ssh_nodes, f"data.dir={tiny_data}", f"run.dir={run_dir}")
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=environment)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "node-a: " in result.stdout + result.stderr and "node-b: " in result.stdout + result.stderr
    assert RunDir(str(run_dir)).info()["perf"]["world_size"] == 2
    assert len(losses(reference)) >= 4 and losses(run_dir) == losses(reference)


@pytest.mark.slow
def test_a_node_whose_rank_is_killed_stops_the_other_and_the_run_resumes(tmp_path, tiny_data, ssh_nodes):
    """kill -9 of node-b's rank mid-run: node-a's rank stops with one line (its next collective fails), the
    launcher exits within 60 s with no process of the run left, and the same command resumes it to the end."""
    run_dir = tmp_path / "killed"
    cmd, environment = multinode(
        tmp_path,
        ssh_nodes,
        f"data.dir={tiny_data}",
        f"run.dir={run_dir}",
        "train.stop_after=null",
        "train.epochs=4",
        "train.checkpoint_every=4",
        "run.resume=true",
    )
    proc = subprocess.Popen(cmd, cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pointer = run_dir / "checkpoints" / "latest"
    try:
        deadline = time.time() + 180
        while not pointer.exists():
            assert proc.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
            time.sleep(0.2)
        [victim] = [
            p
            for p in processes_of(run_dir)
            if rank_of(p) == "1" and "megarecipe.cli.train" in open(f"/proc/{p}/cmdline").read().replace("\0", " ")
        ]
        os.kill(victim, signal.SIGKILL)
        sent = time.time()
        out, _ = proc.communicate(timeout=60)
        took = time.time() - sent
        left = processes_of(run_dir)
    finally:
        for pid in processes_of(run_dir):
            os.kill(pid, signal.SIGKILL)
        proc.kill()
    assert proc.returncode != 0 and took < 60 and not left, (took, left, out[-3000:])
    errors = [line for line in out.splitlines() if line.startswith("node-a: error:")]
    assert len(errors) == 1 and "another rank is gone" in errors[0], out[-3000:]
    environment["MASTER_PORT"] = str(free_port())
    resumed = subprocess.run(cmd, cwd=REPO, env=environment, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert RunDir(str(run_dir)).info()["status"] == "finished"
    assert "resum" in resumed.stdout + resumed.stderr, resumed.stdout[-2000:]


@pytest.mark.slow
def test_the_hostfile_check_guards_what_ssh_receives(tmp_path, ssh_nodes):
    """With real hosts behind it, an argument a remote shell would act on is still refused before any ssh
    session opens (the sshd's log counts them)."""
    marker = tmp_path / "ran"
    sessions = os.path.join(os.path.dirname(ssh_nodes), "sshd.log")
    before = open(sessions).read().count("Accepted publickey")
    cmd, environment = multinode(tmp_path, ssh_nodes, f"run.dir={tmp_path / 'r'}", f"run.name=$(touch {marker})")
    result = subprocess.run(cmd, cwd=REPO, env=environment, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.startswith("error: argument 'run.name=$(touch"), result.stderr
    assert not marker.exists() and open(sessions).read().count("Accepted publickey") == before
