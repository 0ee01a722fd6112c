"""`pytest -p tests.cpu_report`: CPU seconds per test (this process, its reaped children, and the warm forkserver
with the runs it reaped), the slowest listed at the end. CPU is the figure that compares between machines."""

from __future__ import annotations

import os
import resource

import pytest

_TICK = os.sysconf("SC_CLK_TCK")
_spent: dict[str, tuple[float, float]] = {}


def _server_cpu() -> float:
    try:
        from multiprocessing import forkserver

        pid = forkserver._forkserver._forkserver_pid
        if not pid:
            return 0.0
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15]) / _TICK  # utime stime cutime cstime
    except (OSError, AttributeError, ImportError, IndexError, ValueError):
        return 0.0


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime + _server_cpu()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    import time

    cpu, wall = _cpu(), time.monotonic()
    server_before = _server_cpu()
    yield
    after = _cpu()
    if _server_cpu() < server_before:  # the server was restarted: count what the new one spent
        after += server_before
    _spent[item.nodeid] = (after - cpu, time.monotonic() - wall)


def pytest_terminal_summary(terminalreporter):
    rows = sorted(_spent.items(), key=lambda kv: -kv[1][0])
    total = sum(c for c, _ in _spent.values())
    terminalreporter.write_sep("=", f"CPU seconds per test (total {total:.0f} CPU-s over {len(rows)} tests)")
    for nodeid, (cpu, wall) in rows[:40]:
        terminalreporter.write_line(f"{cpu:7.1f} CPU-s {wall:7.1f} s  {nodeid}")
    out = os.environ.get("MEGARECIPE_TEST_CPU")
    if out and os.environ.get("PYTEST_XDIST_WORKER"):  # each worker (gw0, gw1, ...) its own file: FILE.gw0
        out = f"{out}.{os.environ['PYTEST_XDIST_WORKER']}"
    if out:
        with open(out, "w") as f:
            for nodeid, (cpu, wall) in rows:
                f.write(f"{cpu:.2f}\t{wall:.2f}\t{nodeid}\n")
