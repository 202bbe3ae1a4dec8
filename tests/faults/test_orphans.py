"""No server outlives `bench`: real `bench run` processes launch a server (a stand-in for vLLM with
a SIGTERM-deaf worker, tests/faults/fake_vllm.py; the real CPU engine in the `engine` test), then
bench is killed with SIGKILL, hung up on, interrupted twice, or fails in the meter's stop(). After
each, no process of the server's group, and none carrying its token, may be left."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from harness.config import default_engine_venv
from harness.launcher import group_members
from harness.records import ProcessIdentity
from harness.server import ORPHAN_GRACE_S, SERVER_TOKEN_ENV, _boot_id, stop_leftover
from harness.store import read_manifest
from tests.conftest import ROOT, bench
from tests.timing import SCHEDULING_SLACK_S

FAKE_VLLM = Path(__file__).with_name("fake_vllm.py")


def fake_variant(tmp_path: Path) -> Path:
    python = tmp_path / "fake-python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_VLLM}" "$@"\n')
    python.chmod(0o755)
    variant = tmp_path / "fake.yaml"
    variant.write_text(f"name: fake\nmodel: org/fake\nserver: {{python: '{python}', startup_timeout_s: 60}}\n")
    return variant


def start_bench(*args, sigint_ignored: bool = False, env: dict | None = None) -> subprocess.Popen:
    """`sigint_ignored`: as a job started in the background of a script (cron, `nohup … &`) inherits it."""
    def ignore_sigint():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return subprocess.Popen([sys.executable, "-m", "harness.cli", "run", *map(str, args)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=ignore_sigint if sigint_ignored else None, env={**os.environ, **(env or {})})


STARTED_TOKENS: list[str] = []


@pytest.fixture(autouse=True)
def no_strays():
    """Whatever a failing test leaves, the shared machine gets back."""
    yield
    while STARTED_TOKENS:
        for pid in tokened(STARTED_TOKENS.pop()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def start_run(tmp_path: Path, *extra, limit: int = 40, sigint_ignored: bool = False, env: dict | None = None
              ) -> tuple[subprocess.Popen, Path, dict]:
    """A real `bench run` on the fake server, once it has journalled two requests."""
    proc = start_bench("--variant", fake_variant(tmp_path), "--results-dir", tmp_path, "--run-id", "r",
                       "--idle-s", "0", "--limit", limit, *(extra or ("--energy", "none")),
                       sigint_ignored=sigint_ignored, env=env)
    run = tmp_path / "r"
    process = journalled_two(proc, run, timeout_s=60)
    assert len(group_members(process["pgid"])) >= 3  # launcher, server, worker
    return proc, run, process


def journalled_two(proc: subprocess.Popen, run: Path, timeout_s: float) -> dict:
    """Wait until `bench` has journalled two requests; the server's recorded process identity."""
    deadline = time.monotonic() + timeout_s
    while not ((run / "requests.jsonl").exists() and (run / "requests.jsonl").read_text().count("\n") >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    process = json.loads((run / "manifest.json").read_text())["server"]["process"]
    STARTED_TOKENS.append(process["token"])
    return process


def tokened(token: str) -> list[int]:
    marker = f"{SERVER_TOKEN_ENV}={token}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in environ.read_bytes().split(b"\0"):
                state = (environ.parent / "stat").read_text().rsplit(")", 1)[1].split()[0]
                found += [int(environ.parent.name)] if state != "Z" else []
        except OSError:
            continue
    return found


def assert_all_gone(process: dict, settle_s: float = 20.0) -> None:
    deadline = time.monotonic() + settle_s
    while group_members(process["pgid"]) or tokened(process["token"]):
        if time.monotonic() > deadline:
            left = set(group_members(process["pgid"])) | set(tokened(process["token"]))
            for pid in left:  # leave nothing behind for the next test, then fail
                os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"server processes survived bench: {sorted(left)}")
        time.sleep(0.2)


def test_kill_9_of_bench_takes_the_server_group_with_it(tmp_path):
    proc, _, process = start_run(tmp_path)
    proc.kill()
    proc.communicate()
    assert_all_gone(process)


def test_sighup_stops_the_run_as_incomplete_and_the_server(tmp_path):
    proc, run, process = start_run(tmp_path)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 4 and "--resume" in err and "Traceback" not in err
    assert json.loads((run / "manifest.json").read_text())["status"] == "incomplete"
    assert_all_gone(process)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_run_started_with_sigint_ignored_still_stops_on_a_signal(tmp_path, sig):
    """Started in the background of a script, bench inherits SIGINT ignored; SIGTERM (which ends a
    run as a Ctrl-C does) and an explicit SIGINT must still stop it, marked incomplete."""
    proc, run, process = start_run(tmp_path, sigint_ignored=True)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 4 and "--resume" in err and "Traceback" not in err
    assert json.loads((run / "manifest.json").read_text())["status"] == "incomplete"
    assert_all_gone(process)


def sigterm_received(pid: int) -> bool:
    """Has the stand-in server got SIGTERM? Its handler (fake_vllm.py) first makes it ignore any further one."""
    status = Path(f"/proc/{pid}/status").read_text()
    ignored = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:")), 16)
    return bool(ignored >> (signal.SIGTERM - 1) & 1)


def wait_until_the_server_is_stopping(proc: subprocess.Popen, process: dict) -> None:
    """bench installs its handler for a Ctrl-C during the server's stop just before it sends the server
    SIGTERM (runner._measure registers it after the server, so it is closed first); the stand-in then
    takes 1.5 s to shut down, more than the allowance: a SIGINT sent now lands while bench waits for it."""
    deadline = time.monotonic() + 60
    while not sigterm_received(process["server_pid"]):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "bench never stopped the server"
        time.sleep(0.01)


def test_second_ctrl_c_while_the_server_shuts_down_leaves_nothing(tmp_path):
    proc, _, process = start_run(tmp_path)
    proc.send_signal(signal.SIGINT)
    wait_until_the_server_is_stopping(proc, process)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err
    assert_all_gone(process)


def test_a_first_ctrl_c_while_the_server_stops_at_the_end_is_an_interrupt_not_an_exit(tmp_path):
    """The run has sent everything and is stopping its server when the (first) Ctrl-C comes: the server's
    group is killed at once, and the run still writes its ending, as interrupted; a resume completes it."""
    proc, run, process = start_run(tmp_path, limit=4)
    wait_until_the_server_is_stopping(proc, process)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 4 and "interrupted" in err and "Traceback" not in err, err
    assert_all_gone(process)
    manifest = read_manifest(run)
    assert manifest.status.value == "incomplete" and manifest.incomplete_cause.startswith("interrupted")
    assert all(seg.ended_wall_s is not None for seg in manifest.segments)
    resumed = bench("run", "--resume", run, timeout=120)
    assert resumed.returncode == 0 and read_manifest(run).complete, resumed.stderr


def test_an_error_in_the_meters_stop_leaves_no_server(tmp_path):
    trace = tmp_path / "trace.csv"
    now = time.time()
    trace.write_text(f"time_s,power_w\n{now - 10},100\n{now + 3600},100\n")
    # After its last request the run waits out the idle-after window before the meter's stop(): the
    # rewrite below lands before that even when this process is held up by the allowance.
    proc, _, process = start_run(tmp_path, "--energy", "trace", "--power-trace", trace,
                                 "--idle-after-s", 2 * SCHEDULING_SLACK_S, limit=6)
    trace.write_text("this is no longer a trace\n")  # the trace meter reads its file again in stop()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and f"power trace {trace} has no 'power_w' column" in err, err
    assert "Traceback" not in err
    assert_all_gone(process)


def test_resume_stops_a_server_left_by_the_earlier_segment(tmp_path):
    proc, run, process = start_run(tmp_path, limit=8)
    # bench and its launcher die together (an OOM kill, `kill -9` of both): a stuck worker of the
    # server is left running, holding the GPU.
    os.kill(process["launcher_pid"], signal.SIGSTOP)
    proc.kill()
    proc.communicate()
    os.kill(process["launcher_pid"], signal.SIGKILL)  # the server gets SIGTERM (PR_SET_PDEATHSIG) and goes
    time.sleep(0.5)
    left = tokened(process["token"])
    assert process["server_pid"] in left and len(left) == 2  # still shutting down, and its stuck worker
    result = bench("run", "--resume", run, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "stopped the server left running by an earlier segment" in result.stdout + result.stderr
    assert not [pid for pid in left if Path(f"/proc/{pid}").exists()
                and (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z")]
    manifest = json.loads((run / "manifest.json").read_text())
    STARTED_TOKENS.append(manifest["server"]["process"]["token"])
    assert manifest["status"] == "complete"
    assert_all_gone(manifest["server"]["process"])


def _wait_for_exec(pid: int, program: bytes, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] != program:
        assert time.monotonic() < deadline, f"pid {pid} did not exec {program!r}"
        time.sleep(0.01)


def test_stop_leftover_never_touches_a_process_it_cannot_prove_is_ours(tmp_path):
    # A process group that reuses the recorded pgid, without the run's token: left alone.
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        recorded = ProcessIdentity(pgid=other.pid, launcher_pid=other.pid, token="not-it", boot_id=_boot_id())
        assert stop_leftover(recorded) is None and other.poll() is None
        # The run's own token, but recorded on another boot (or machine): nothing of it runs here.
        mine = subprocess.Popen(["sleep", "60"], start_new_session=True, env={**os.environ, SERVER_TOKEN_ENV: "t1"})
        try:
            _wait_for_exec(mine.pid, b"sleep")  # before exec, /proc shows the forked parent's environment
            assert stop_leftover(replace(recorded, token="t1", boot_id="another-boot")) is None and mine.poll() is None
            assert "stopped" in stop_leftover(replace(recorded, token="t1"))
            assert mine.wait(timeout=15) == -signal.SIGTERM
        finally:
            mine.kill()
            mine.wait()
        assert stop_leftover(None) is None
    finally:
        other.kill()
        other.wait()


@pytest.mark.engine
@pytest.mark.skipif(not (default_engine_venv() / "bin" / "python").exists(), reason="vLLM CPU engine not built")
def test_kill_9_of_bench_stops_the_real_vllm_engine(tmp_path):
    proc = start_bench("--variant", "cpu-tiny", "--limit", "40", "--results-dir", tmp_path, "--run-id", "e",
                       "--idle-s", "0")
    process = journalled_two(proc, tmp_path / "e", timeout_s=600)
    assert len(group_members(process["pgid"])) >= 2  # launcher, API server, engine core
    proc.kill()
    proc.communicate()
    assert_all_gone(process, settle_s=60)


def test_a_sweep_starts_a_launched_server_once(tmp_path):
    """`--concurrency 1,2` with a launched variant: one server start serves both levels."""
    result = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--variant", fake_variant(tmp_path),
                             "--results-dir", tmp_path, "--run-id", "sw", "--idle-s", "0", "--limit", "3",
                             "--energy", "none", "--concurrency", "1,2", "--quiet"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    log = (tmp_path / "sw-server" / "server.log").read_text()
    assert log.count("listening on") == 1
    for level in ("sw-c1", "sw-c2"):
        manifest = json.loads((tmp_path / level / "manifest.json").read_text())
        assert manifest["status"] == "complete" and manifest["variant"]["name"] == "fake"
    assert not list(tmp_path.glob("sw-c*/server.log"))  # no level started a server of its own


def test_a_dead_server_is_named_as_the_cause_while_its_launcher_still_sweeps_workers(tmp_path):
    """The server is SIGKILLed; its worker ignores SIGTERM, so the launcher needs seconds to sweep it.
    Meanwhile every request fails: the run must still say the server died, not that requests failed.
    The launcher's sweep keeps its real grace here: that window is what this test is about."""
    proc, run, process = start_run(tmp_path, "--energy", "none", "--max-retries", "0",
                                   env={"BENCH_ORPHAN_GRACE_S": str(ORPHAN_GRACE_S)})
    os.kill(process["server_pid"], signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 4 and "server died" in err and "Traceback" not in err, err
    assert "server died" in json.loads((run / "manifest.json").read_text())["incomplete_cause"]
    assert_all_gone(process)
