"""Shared fixtures: real processes on loopback (mock OpenAI server, `bench` CLI subprocesses)."""

from __future__ import annotations

import fcntl
import io
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from tests.postgres import postgres_server, postgres_url  # noqa: F401 -- fixtures: a throwaway PostgreSQL server

ROOT = Path(__file__).resolve().parent.parent

# The harness's fixed waits, short: what the tests check is the order of events (a settle happens,
# orphaned workers get SIGTERM then SIGKILL, start-up is polled), not how long real hardware needs.
# Set in the environment, so the `bench` subprocesses the tests start inherit them too.
for _name, _seconds in (("BENCH_IDLE_AFTER_SETTLE_S", "0.2"), ("BENCH_ORPHAN_GRACE_S", "0.5"),
                        ("BENCH_HEALTH_POLL_S", "0.25")):
    os.environ.setdefault(_name, _seconds)
FIXTURES = Path(__file__).resolve().parent / "fixtures"
H200_RUNS = FIXTURES / "h200-20261127"


class MockServer:
    def __init__(self, proc: subprocess.Popen, port: int):
        self.proc, self.port = proc, port
        self.url = f"http://127.0.0.1:{port}"

    def control(self, **update) -> None:
        request = urllib.request.Request(self.url + "/_control", data=json.dumps(update).encode(), method="POST")
        urllib.request.urlopen(request, timeout=5).read()

    def received(self) -> list[dict]:
        return json.loads(urllib.request.urlopen(self.url + "/_requests", timeout=5).read())


def start_mock(*args: str) -> MockServer:
    proc = subprocess.Popen([sys.executable, "-m", "harness.mock_server", "--port", "0", *args],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    line = proc.stdout.readline()
    assert line.startswith("listening on"), line
    return MockServer(proc, int(line.split()[-1]))


def started_processes(start):
    """The body of a fixture that starts processes: it yields `make(*args)`, which calls `start(*args)`
    (an object holding its `subprocess.Popen` as `.proc`); each one still running is killed at teardown."""
    started = []

    def make(*args: str):
        started.append(start(*args))
        return started[-1]

    yield make
    for thing in started:
        thing.proc.kill()  # a no-op for one that has ended
        thing.proc.wait()


@pytest.fixture
def mock_server():
    yield from started_processes(start_mock)


def bench(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "harness.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})})


def cli(*args: str) -> subprocess.CompletedProcess:
    """The CLI in-process, through the same entry point as `bench` (`harness.cli.run`): messages
    and exit codes as a user sees them, without paying for a new interpreter each time."""
    from harness.cli import run

    out, err, code = io.StringIO(), io.StringIO(), 0
    argv = sys.argv
    sys.argv = ["bench", *map(str, args)]
    try:
        with redirect_stdout(out), redirect_stderr(err):
            run()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def write_trace(path, start_s, seconds, power_w=100.0):
    """A flat external power trace (wall-clock seconds, W, counter mJ) for `--energy trace`."""
    import numpy as np
    import pandas as pd

    t = np.arange(start_s, start_s + seconds, 0.05)
    pd.DataFrame({"time_s": t, "power_w": power_w, "energy_mj": (t - start_s) * power_w * 1000.0}).to_csv(
        path, index=False)


# One vLLM CPU engine at a time on this machine (~4 GB and both cores each), whatever runs the tests:
# a lock held around each engine test, fixtures included, across xdist workers and pytest sessions.
ENGINE_LOCK = Path(tempfile.gettempdir()) / "energy-harness-engine-tests.lock"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """With pytest-xdist (`-n 4 --dist loadgroup`), every `engine` test goes to one worker, so the
    others never wait on the engine lock and module fixtures run once. First among the hooks: xdist's
    own hook turns the group mark into the node id's `@engine` suffix that loadgroup schedules by."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        if item.get_closest_marker("engine"):
            item.add_marker(pytest.mark.xdist_group("engine"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Holds ENGINE_LOCK from an engine test's first fixture to its last teardown. The grouping alone
    is not a guarantee: pytest 9 reads node ids from a field pytest-xdist 3.8 does not set, and every
    engine test ran ungrouped, four engines on two cores, until this lock (2026-11-28)."""
    if not item.get_closest_marker("engine"):
        yield
        return
    with open(ENGINE_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
