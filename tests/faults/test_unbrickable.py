"""Issue 10 against real processes: a full disk, a torn journal, kill -9 + resume with a trace
meter, and the loop's extension points (warm-up, passes, idle after). The mock OpenAI server is a
real process on loopback; runs execute in-process (the runner's public entry point) where a fault
is injected into the file layer, and as `bench` subprocesses where a signal ends them."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from harness import store
from harness.config import RunSettings, load_suite_spec
from harness.errors import ResultsError, RunAborted
from harness.loop import RunSpec
from harness.progress import PlainProgress
from harness.runner import execute, resume_spec
from harness.store import load_run, read_manifest
from tests.conftest import ROOT, bench, cli, write_trace


def spec_for(server, tmp_path, run_id="r", **settings) -> RunSpec:
    base = {"limit": 4, "idle_s": 0.0, "energy": "none", "max_retries": 0}
    return RunSpec(suite=load_suite_spec("default"), base_url=server.url,
                   settings=RunSettings(results_dir=tmp_path, run_id=run_id, **{**base, **settings}))


def quiet():
    return PlainProgress(open(os.devnull, "w"))  # noqa: SIM115


def test_disk_full_mid_run_ends_incomplete_and_resume_finishes(mock_server, tmp_path, monkeypatch):
    """Item 2: ENOSPC on the journal ends the run like an interruption; after space is freed,
    --resume sends every missing item."""
    # Requests longer than the journal's group-commit interval: one append per record, one at a time,
    # so the third append is the one that meets the full disk whatever the machine's load.
    server = mock_server("--ttft-ms", "40", "--itl-ms", "0")
    real = store._open_append
    budget = {"appends": 2}

    def filling_disk(path):
        f = real(path)
        if path.name == "requests.jsonl":
            budget["appends"] -= 1
            if budget["appends"] < 0:
                f.close()
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return f

    monkeypatch.setattr(store, "_open_append", filling_disk)
    with pytest.raises(RunAborted, match="no space left on device"):
        execute(spec_for(server, tmp_path), quiet())
    run = tmp_path / "r"
    m = read_manifest(run)
    assert m.status.value == "incomplete" and m.incomplete_cause == "no space left on device"
    assert not list(run.glob("*.tmp")) and not (run / "run.lock").exists()
    monkeypatch.setattr(store, "_open_append", real)  # space freed
    execute(resume_spec(run, base_url=server.url, model=None, api_key=None), quiet())
    done = load_run(run)
    assert done.manifest.complete and done.summary.latency.ok == 4
    assert len(done.manifest.segments) == 2


def test_torn_journal_tail_is_repaired_on_resume_and_the_item_resent(mock_server, tmp_path):
    """Item 1: half a line at the end of the journal is dropped (and recorded), not glued to the
    next record; the run ends with every item."""
    server = mock_server("--ttft-ms", "1", "--itl-ms", "0")
    execute(spec_for(server, tmp_path), quiet())
    run = tmp_path / "r"
    journal = run / "requests.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text("".join(lines[:-1]) + lines[-1][:50])
    m = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**m, "status": "running"}))
    execute(resume_spec(run, base_url=server.url, model=None, api_key=None), quiet())
    done = load_run(run)
    assert done.manifest.complete and done.summary.latency.ok == 4
    assert done.manifest.segments[-1].journal_repaired_bytes == {"requests.jsonl": 50}
    assert any(f.startswith("journal_repaired") for f in done.summary.flags)


def test_warmup_passes_and_idle_after_are_recorded(mock_server, tmp_path):
    """Extension points: warm-up at the run's concurrency over the caller's items, pass by pass
    with a callback between passes, idle power before and after, all in the segment."""
    server = mock_server("--ttft-ms", "1", "--itl-ms", "0")
    trace = tmp_path / "trace.csv"
    write_trace(trace, time.time() - 5, 120)
    calls = []
    spec = spec_for(server, tmp_path, limit=3, samples=2, warmup=3, concurrency=2, energy="trace",
                    power_trace=trace, idle_s=0.3, idle_after_s=0.3)
    from harness.suite import load_suite

    warm = load_suite(spec.suite, 1).items
    from dataclasses import replace
    spec = replace(spec, warmup_items=warm, between_passes=calls.append)
    execute(spec, quiet())
    bodies = server.received()
    assert len(bodies) == 3 + 6 and all("seed" not in b for b in bodies[:3])
    samples = [(b["seed"] // 1_000_003) for b in bodies[3:]]
    assert samples == sorted(samples)  # every item of pass 0 before any of pass 1
    assert calls == [0]
    run = load_run(tmp_path / "r")
    seg = run.manifest.segments[0]
    assert seg.warmup.requests == 3 and seg.warmup.concurrency == 2 and seg.warmup.items_source == "spec"
    assert seg.passes_completed == 2 and seg.between_passes_calls == 1
    assert seg.idle_window_ns and seg.idle_after_window_ns
    assert run.summary.energy.idle_power_w == pytest.approx(100.0)
    assert run.summary.energy.idle_after_power_w == pytest.approx(100.0)


def test_kill_9_and_resume_with_a_trace_counts_neither_downtime_nor_the_trace_twice(mock_server, tmp_path):
    """Items 8 and 11: SIGKILL leaves no `finally`; the segments are in the journal all the same.
    A 100 W trace with an energy counter, appended by both segments, integrates to 100 W x the
    measured window."""
    server = mock_server("--ttft-ms", "200", "--itl-ms", "0")
    trace = tmp_path / "trace.csv"
    write_trace(trace, time.time() - 5, 300)
    args = ["run", "--base-url", server.url, "--results-dir", tmp_path, "--run-id", "k", "--limit", "8",
            "--idle-s", "0", "--energy", "trace", "--power-trace", trace]
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", *map(str, args)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = tmp_path / "k" / "requests.jsonl"
    deadline = time.monotonic() + 60
    while not (journal.exists() and journal.read_text().count("\n") >= 3):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(2)  # downtime: must not be counted
    server.control(ttft_ms=1)
    result = bench("run", "--resume", tmp_path / "k", "--base-url", server.url)
    assert result.returncode == 0, result.stderr
    run = load_run(tmp_path / "k")
    e = run.summary.energy
    assert run.summary.latency.ok == 8 and e.gap_excluded_s >= 2
    assert e.total_j == pytest.approx(100.0 * e.window_s, rel=0.02)
    assert run.summary.latency.duration_s == pytest.approx(e.window_s)
    journaled = pd.read_csv(tmp_path / "k" / "power.csv")
    assert not journaled.duplicated(["t_ns", "gpu"]).any()


def test_complete_is_written_only_after_the_tables_and_summary(mock_server, tmp_path, monkeypatch):
    """Item 3: when finalisation fails, the run is not "complete" (so it can be resumed and
    reanalysed), the original error is kept as the cause, and the next finalisation recovers."""
    import harness.runner

    server = mock_server("--ttft-ms", "1", "--itl-ms", "0")

    def broken(run_dir, status=None, power_trace=None):
        raise ValueError("analysis bug")

    monkeypatch.setattr(harness.runner, "finalize_run", broken)
    with pytest.raises(ResultsError, match="bench reanalyze") as info:
        execute(spec_for(server, tmp_path), quiet())
    assert isinstance(info.value.__cause__, ValueError)  # --debug shows the original
    m = read_manifest(tmp_path / "r")
    assert m.status.value == "incomplete" and "finalisation failed: ValueError: analysis bug" in m.incomplete_cause
    monkeypatch.undo()
    assert cli("reanalyze", tmp_path / "r").returncode == 0
    execute(resume_spec(tmp_path / "r", base_url=server.url, model=None, api_key=None), quiet())
    assert load_run(tmp_path / "r").manifest.complete



def test_a_trace_is_journaled_once_across_segments(mock_server, tmp_path):
    """Item 11: the second segment of an `--energy trace` run does not append the trace again."""
    server = mock_server("--ttft-ms", "1", "--itl-ms", "0")
    trace = tmp_path / "trace.csv"
    write_trace(trace, time.time() - 5, 120)
    with pytest.raises(RunAborted):
        execute(spec_for(server, tmp_path, energy="trace", power_trace=trace), _interrupted_after_one())
    lines = (tmp_path / "r" / "power.csv").read_text().count("\n")
    assert lines > 100 and load_run(tmp_path / "r").summary.latency.ok < 4
    execute(resume_spec(tmp_path / "r", base_url=server.url, model=None, api_key=None), quiet())
    assert (tmp_path / "r" / "power.csv").read_text().count("\n") == lines
    assert load_run(tmp_path / "r").summary.latency.ok == 4


def _interrupted_after_one():
    """Progress that presses Ctrl-C once the first request is in."""
    class Interrupt(PlainProgress):
        def advance(self, record):
            raise KeyboardInterrupt
    return Interrupt(open(os.devnull, "w"))  # noqa: SIM115


def test_a_ctrl_c_after_any_manifest_write_leaves_a_finished_manifest(mock_server, tmp_path, monkeypatch):
    """All the ways a run can end, by where the interrupt lands: a real SIGINT raised right after each
    of a run's manifest writes in turn (the first says "running", the last the final status) leaves a
    manifest that says how the run ended, never "running", and every such run resumes to complete."""
    server = mock_server("--ttft-ms", "1", "--itl-ms", "0")
    real = store.RunStore.write_manifest
    writes, interrupt_at = [], None

    def write_then_interrupt(self, manifest):
        real(self, manifest)
        writes.append(manifest.status)
        if len(writes) == interrupt_at:
            os.kill(os.getpid(), signal.SIGINT)  # as a Ctrl-C: to the process, through the handlers in force

    monkeypatch.setattr(store.RunStore, "write_manifest", write_then_interrupt)
    execute(spec_for(server, tmp_path, run_id="clean", warmup=2), quiet())
    count = len(writes)
    assert count >= 5 and writes[0].value == "running" and writes[-1].value == "complete"
    for interrupt_at in range(1, count + 1):
        writes.clear()
        run_id = f"at-{interrupt_at}"
        with pytest.raises((RunAborted, KeyboardInterrupt)):
            execute(spec_for(server, tmp_path, run_id=run_id, warmup=2), quiet())
        m = read_manifest(tmp_path / run_id)
        assert m.status.value in ("complete", "incomplete"), (interrupt_at, m.status)
        assert all(seg.ended_wall_s is not None for seg in m.segments), interrupt_at
        if not m.complete:
            assert m.incomplete_cause, interrupt_at
            execute(resume_spec(tmp_path / run_id, base_url=server.url, model=None, api_key=None), quiet())
            assert load_run(tmp_path / run_id).summary.latency.ok == 4, interrupt_at
