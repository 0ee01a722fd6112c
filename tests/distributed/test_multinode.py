"""launchers/multinode.sh over real ssh: DeepSpeed's pdsh runner starts one rank on each of two "nodes" (the
ssh_nodes fixture: both this machine, through an sshd of the session's own)."""
import os
import subprocess

import pytest

from megarecipe.rundir import RunDir
from megarecipe.system import free_port

from tests.helpers import REPO, TINY, env, losses, train


@pytest.mark.slow
def test_two_nodes_over_ssh_train_to_the_losses_of_one_node(tmp_path, tiny_data, ssh_nodes):
    """2 nodes x 1 process (pdsh -> ssh -> deepspeed.launcher.launch on each) ends with the losses of 1 node x 2.
    What the ranks need from this environment goes to them in the file DS_ENV_FILE names, DeepSpeed's way."""
    reference, _ = train(tmp_path, "one_node", 2, tiny_data)
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node-a slots=1\nnode-b slots=1\n")
    env_file = tmp_path / "deepspeed_env"
    env_file.write_text("OMP_NUM_THREADS=1\nDS_ACCELERATOR=cpu\n")
    run_dir = tmp_path / "two_nodes"
    result = subprocess.run(
        [str(REPO / "launchers" / "multinode.sh"), str(hostfile), "configs/tiny.yaml", *TINY,
         f"data.dir={tiny_data}", f"run.dir={run_dir}"], cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**env(), "PATH": f"{ssh_nodes}{os.pathsep}{os.environ['PATH']}", "DS_ENV_FILE": str(env_file),
             "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "node-a: " in result.stdout + result.stderr and "node-b: " in result.stdout + result.stderr
    assert RunDir(str(run_dir)).info()["perf"]["world_size"] == 2
    assert len(losses(reference)) >= 4 and losses(run_dir) == losses(reference)
