import os

import pytest

from tests.helpers import REPO, TINY


@pytest.fixture(scope="session")
def tiny_ensemble(tiny_data, tmp_path_factory):
    """`ensemble.py train --members 3 --parallel 2` of the tiny shape for its whole schedule (seeds 1-3), then
    `ensemble.py eval` (ensemble.json, L(K) events): the ensemble tests and the ensemble-teacher student share it.
    The tool runs in this process, so its members start warm from the session's forkserver (the tool's own
    command line is tested in test_train.py)."""
    from megarecipe.cli.ensemble import main

    ens = tmp_path_factory.mktemp("ensemble") / "ens"
    here = os.getcwd()
    os.chdir(REPO)
    try:
        for args in (
            [
                "train",
                "configs/tiny.yaml",
                "--members",
                "3",
                "--parallel",
                "2",
                "--out",
                str(ens),
                *TINY,
                f"data.dir={tiny_data}",
                "train.stop_after=null",
            ],
            ["eval", str(ens), "--no-progress"],
        ):
            assert main(args) == 0, args
    finally:
        os.chdir(here)
    return ens


@pytest.fixture(scope="session")
def ssh_nodes(tmp_path_factory):
    """Two ssh "nodes", node-a and node-b, both this machine through an sshd of the session's own
    (tests/services/sshd.sh); returns the folder to put first on PATH (its `ssh` knows them). Skipped with the
    script's one-line reason where it cannot run (not root, no apt-get)."""
    from tests.helpers import service

    with service("sshd", tmp_path_factory.mktemp("sshd"), "a local sshd") as path:
        yield path
