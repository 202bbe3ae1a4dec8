"""Finalisation from journals (finalize.py): one measured window, rebuilding from the journal,
bad power readings, strict summary JSON."""

import json

import numpy as np
import pandas as pd
import pytest

from harness.energy.analysis import analyse
from harness.finalize import finalize_run, latency_summary, open_run
from harness.records import MeterInfo, RunStatus
from harness.results import Segment, mark_retried
from harness.store import RunStore
from tests.unit.test_store import manifest, row

S = 1_000_000_000


def make_run(tmp_path, rows, power_w=100.0, times_s=None):
    run = tmp_path / "run"
    run.mkdir()
    m = manifest(meter=MeterInfo(kind="trace"), segments=(Segment(0, 0.0, 0), Segment(1, 0.0, 0)))
    RunStore(run).write_manifest(m)
    (run / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    times_s = np.arange(0, 103, 0.1) if times_s is None else times_s
    power = np.full(len(times_s), power_w) if np.isscalar(power_w) else power_w
    pd.DataFrame({"t_ns": (times_s * S).astype(np.int64), "gpu": 0, "power_w": power}).to_csv(run / "power.csv",
                                                                                             index=False)
    return run


def resumed_rows():
    """Two requests, [0, 1] s in segment 0 and [101, 102] s in segment 1 (100 s of downtime)."""
    a = {**row("a", 0, segment=0, seq=0), "end_ns": 1 * S, "first_token_ns": S // 2}
    b = {**row("b", 101 * S, segment=1, seq=1), "end_ns": 102 * S, "first_token_ns": 101 * S + S // 2}
    return [a, b]


def test_throughput_and_energy_share_one_measured_window(tmp_path):
    """Issue 10 items 8 and 9: the stretch between segments counts for neither."""
    summary = finalize_run(make_run(tmp_path, resumed_rows()), status=RunStatus.INCOMPLETE)
    assert summary.latency.duration_s == pytest.approx(2.0)
    assert summary.latency.requests_per_s == pytest.approx(1.0)
    assert summary.energy.window_s == pytest.approx(2.0)
    assert summary.energy.total_j == pytest.approx(200.0, rel=1e-6)  # 100 W for 2 s, not 102 s


def test_latency_window_without_segments_is_first_start_to_last_end():
    frame = mark_retried(pd.DataFrame([{**r, "segment": None} for r in resumed_rows()]))
    assert latency_summary(frame).duration_s == pytest.approx(102.0)


def test_readers_rebuild_from_the_journal_when_tables_are_damaged(tmp_path):
    """Issue 10 item 3: a truncated parquet or a missing summary never bricks a run."""
    run = make_run(tmp_path, resumed_rows())
    finalize_run(run)
    (run / "requests.parquet").write_bytes((run / "requests.parquet").read_bytes()[:100])
    (run / "summary.json").unlink()
    data = open_run(run)
    assert data.summary.latency.requests == 2 and len(data.requests) == 2 and not data.stale


def test_summary_is_strict_json(tmp_path):
    run = make_run(tmp_path, [row("a", 0, segment=0, seq=0)])
    finalize_run(run)
    json.loads((run / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in summary.json"))


def test_nan_negative_and_text_power_readings_are_flagged_not_integrated(tmp_path):
    """Issue 10 item 11: bad readings are left out with a flag; energy never goes negative."""
    t = np.arange(0, 103, 0.1)
    power = np.full(len(t), 100.0)
    power[5], power[12] = np.nan, -5000.0
    run = make_run(tmp_path, resumed_rows(), power_w=power, times_s=t)
    text = (run / "power.csv").read_text().splitlines()
    text[30] = text[30].rsplit(",", 1)[0] + ",abc"
    (run / "power.csv").write_text("\n".join(text) + "\n")
    summary = finalize_run(run)
    assert summary.energy.available and summary.energy.total_j == pytest.approx(200.0, rel=1e-3)
    assert summary.energy.bad_power_samples == 3
    assert any(f.startswith("bad_power_samples: 3") for f in summary.energy.flags)


def test_a_trace_appended_twice_counts_once():
    """Issue 10 item 11: `--energy trace` + resume appends the trace again; one sample per time."""
    t = (np.arange(0, 103, 0.1) * S).astype(np.int64)
    once = pd.DataFrame({"t_ns": t, "gpu": 0, "power_w": 100.0, "energy_mj": t / 1e6 * 100})
    twice = pd.concat([once, once], ignore_index=True)
    requests = mark_retried(pd.DataFrame(resumed_rows()))
    from harness.store import dedupe_power

    _, summary = analyse(dedupe_power(twice), requests, idle=None)
    assert summary.total_j == pytest.approx(200.0, rel=1e-6)


def test_a_run_whose_server_never_started_loads_as_a_typed_run(tmp_path):
    """Issue 11: not `{}` -- a typed summary with nothing measured."""
    from dataclasses import replace

    run = tmp_path / "never"
    run.mkdir()
    RunStore(run).write_manifest(replace(manifest(), status=RunStatus.FAILED, incomplete_cause="server exited"))
    data = open_run(run)
    assert data.manifest.status == RunStatus.FAILED and data.summary.latency.requests == 0
    assert not data.summary.energy.available and data.requests.empty
