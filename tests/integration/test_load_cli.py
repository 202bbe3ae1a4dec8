"""Load shapes, time limits, rate limiting and output of `bench run`, against the mock server process."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from harness.load import arrival_offsets_s
from tests.conftest import bench, cli
from tests.timing import SCHEDULING_SLACK_S


def run(server, tmp_path, run_id, *extra):
    return cli("run", "--base-url", server.url, "--results-dir", tmp_path, "--run-id", run_id, "--idle-s", "0",
               *extra)


def test_max_requests_cycles_the_suite_at_a_rate_quietly(mock_server, tmp_path):
    server = mock_server("--ttft-ms", "1", "--itl-ms", "0", "--tokens", "3")
    made = bench("synthetic-suite", tmp_path / "synth", "--images", "3x40x30:png")
    assert made.returncode == 0, made.stderr
    result = run(server, tmp_path, "rate", "--suite", tmp_path / "synth", "--max-requests", "7", "--request-rate",
                 "40", "--concurrency", "2", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "" and "throughput:" in result.stdout and "req/s" in result.stdout
    requests = pd.read_parquet(tmp_path / "rate" / "requests.parquet")
    assert len(requests) == 7 and sorted(requests["sample_index"].tolist()) == [0, 0, 0, 1, 1, 1, 2]
    assert requests["item_id"].str.startswith("synthetic-").all() and requests["item_id"].nunique() == 3
    manifest = json.loads((tmp_path / "rate" / "manifest.json").read_text())
    segment = manifest["segments"][-1]
    # Paced, not all at once: the k-th request to start went no earlier than the k-th arrival time (the run's
    # default seed 0; the last due at 0.098 s, where unpaced all 7 go within milliseconds), counted from a
    # clock reading taken before the pacer starts. A lower bound, exact under any load.
    due_s = arrival_offsets_s(7, rate=40.0, seed=0)
    sent_s = (np.sort(requests["start_ns"].to_numpy()) - segment["requests_started_ns"]) / 1e9
    assert due_s[-1] > 0.05 and (sent_s >= due_s).all(), (sent_s, due_s)
    load = segment["client_load"]
    assert load["lag_p99_ms"] >= 0 and "saturated" in load and manifest["settings"]["max_requests"] == 7


def test_cycling_a_suite_smaller_than_the_concurrency_keeps_every_slot_busy(mock_server, tmp_path):
    """--max-requests cycles the suite in passes; with nothing to run between passes, a pass is no barrier:
    4 in flight over a 3-item suite (a barrier per pass allowed at most 3, and drained between passes)."""
    # The 4th request must start before the 1st is answered: 0.2 s, ample for an idle client to send four,
    # plus the allowance for a loaded machine holding it up (a 0.7 s TTFT).
    ttft_ms = round((0.2 + SCHEDULING_SLACK_S) * 1e3)
    server = mock_server("--ttft-ms", str(ttft_ms), "--itl-ms", "0", "--tokens", "2")
    assert bench("synthetic-suite", tmp_path / "synth", "--images", "3x40x30:png").returncode == 0
    result = run(server, tmp_path, "cyc", "--suite", tmp_path / "synth", "--max-requests", "8", "--concurrency", "4",
                 "--quiet")
    assert result.returncode == 0, result.stderr
    requests = pd.read_parquet(tmp_path / "cyc" / "requests.parquet")
    events = sorted([(t, 1) for t in requests["start_ns"]] + [(t, -1) for t in requests["end_ns"]])
    in_flight, most = 0, 0
    for _, step in events:
        in_flight += step
        most = max(most, in_flight)
    assert len(requests) == 8 and most == 4
    manifest = json.loads((tmp_path / "cyc" / "manifest.json").read_text())
    assert manifest["segments"][-1]["passes_completed"] == 3


def test_duration_ends_a_complete_run_and_max_duration_an_interrupted_one(mock_server, tmp_path):
    server = mock_server("--ttft-ms", "200", "--itl-ms", "0", "--tokens", "2")
    done = run(server, tmp_path, "dur", "--limit", "20", "--request-rate", "8", "--burstiness", "4",
               "--duration", "0.6", "--concurrency", "4")
    assert done.returncode == 0, done.stderr
    n = len(pd.read_parquet(tmp_path / "dur" / "requests.parquet"))
    assert 2 <= n <= 9  # ~0.6 s x 8/s arrivals
    stopped = run(server, tmp_path, "cap", "--limit", "30", "--max-duration-s", "1")
    assert stopped.returncode != 0 and "wall-clock limit" in stopped.stderr and "--resume" in stopped.stderr
    manifest = json.loads((tmp_path / "cap" / "manifest.json").read_text())
    assert manifest["status"] == "incomplete"
    assert len(pd.read_parquet(tmp_path / "cap" / "requests.parquet")) < 30


def test_rate_limited_requests_wait_retry_and_are_resent_on_resume(mock_server, tmp_path):
    server = mock_server("--ttft-ms", "1", "--itl-ms", "0", "--tokens", "2")
    # A Retry-After longer than the first backoff (0.5 s): waiting it out is a physical lower bound.
    server.control(mode="unavailable", unavailable_status=429, retry_after="0.8", mode_times=1)
    result = run(server, tmp_path, "r429", "--limit", "1")
    assert result.returncode == 0, result.stderr
    requests = pd.read_parquet(tmp_path / "r429" / "requests.parquet").sort_values("start_ns")
    assert requests["status"].tolist() == ["http_429", "ok"]
    waited = (requests["start_ns"].iloc[1] - requests["end_ns"].iloc[0]) / 1e9
    assert 0.8 <= waited < 0.8 + SCHEDULING_SLACK_S  # Retry-After, not the 0.5 s backoff
    server.control(mode="unavailable", unavailable_status=503, retry_after="0", mode_times=2)
    first = run(server, tmp_path, "r503", "--limit", "2", "--max-retries", "0")
    assert first.returncode == 0
    assert set(pd.read_parquet(tmp_path / "r503" / "requests.parquet")["status"]) == {"http_5xx"}
    # A finished run with transient failures is complete; a run cut short is resumed: send them again there.
    manifest = tmp_path / "r503" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["status"] = "incomplete"
    manifest.write_text(json.dumps(data))
    again = cli("run", "--resume", tmp_path / "r503", "--base-url", server.url)
    assert again.returncode == 0, again.stderr
    final = pd.read_parquet(tmp_path / "r503" / "requests.parquet")
    assert (final[~final["retried"]]["status"] == "ok").sum() == 2


def test_a_concurrency_list_is_a_sweep_of_runs(mock_server, tmp_path):
    server = mock_server("--ttft-ms", "1", "--itl-ms", "0", "--tokens", "2")
    server.control(prefix_cache=True, dev_mode=True)  # a server that caches prompts and can forget them
    result = run(server, tmp_path, "sw", "--limit", "2", "--concurrency", "1,2", "--quiet")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "sw-c1" / "summary.json").exists() and (tmp_path / "sw-c2" / "summary.json").exists()
    table = result.stdout[result.stdout.index("level"):].splitlines()
    assert [line.split()[0] for line in table[1:3]] == ["c1", "c2"]
    assert table[1].endswith("fresh server") and table[2].endswith("reset")
    # The same items at every level, each level first-seen: the caches were reset in between.
    for level in ("sw-c1", "sw-c2"):
        assert (pd.read_parquet(tmp_path / level / "requests.parquet")["cached_tokens"] == 0).all()
    # The sweep report: written at the end, and rebuilt from the stored runs by `bench report`.
    assert "sweep report:" in result.stdout and (tmp_path / "sw-sweep" / "sweep.html").exists()
    (tmp_path / "sw-sweep" / "sweep.md").unlink()
    again = bench("report", tmp_path / "sw-sweep")
    assert again.returncode == 0, again.stderr
    text = (tmp_path / "sw-sweep" / "sweep.md").read_text()
    assert "| c1 |" in text and "| c2 |" in text and "sweep_latency.png" in text
    assert "No energy curves" in text  # the mock server has no GPU
    bad = run(server, tmp_path, "bad", "--concurrency", "1,x")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "--concurrency" in bad.stderr
