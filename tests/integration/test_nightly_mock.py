"""`bench nightly` end to end against mock servers: two GPU lanes (child processes), a variant whose
server is down (recorded as failed, the others still run), gates, report, history, exit bits."""

import json
import sqlite3
import textwrap

from tests.conftest import bench, cli


def night_config(tmp_path, url, lanes="[0, 1]", down='{variant: cpu-tiny, name: down, base_url: "http://127.0.0.1:9"}'):
    path = tmp_path / "night.yaml"
    path.write_text(textwrap.dedent(f"""
        name: mock-night
        baseline: {{variant: cpu-tiny, name: base, base_url: "{url}"}}
        candidates:
          - {{variant: cpu-tiny, name: cand, base_url: "{url}"}}
          - {down}
        limit: 4
        concurrency: [2]
        warmup: 0
        idle_s: 0
        repeats: 1
        energy: none
        gpus: {lanes}
        results_dir: {tmp_path / "nightly"}
        history: {tmp_path / "history.sqlite"}
        metrics: [quality, e2e_p50_s]
        """))
    return path


def test_two_lanes_a_dead_variant_and_the_night_report(tmp_path, mock_server):
    server = mock_server("--answer", "4")
    result = bench("nightly", "--config", night_config(tmp_path, server.url), "--night-id", "2026-12-01", timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr  # a run failed; no gate failed, no regression
    night = tmp_path / "nightly" / "2026-12-01"
    summary = json.loads((night / "night.json").read_text())
    outcomes = summary["outcomes"]
    assert sorted((o["lane"], o["label"], o["ok"]) for o in outcomes) == [
        ("0", "base", True), ("0", "cand", True), ("0", "down", False),
        ("1", "base", True), ("1", "cand", True), ("1", "down", False)]
    # each lane ran every variant in its own rotated order
    orders = {lane: [o["label"] for o in sorted(outcomes, key=lambda o: o["position"]) if o["lane"] == lane]
              for lane in ("0", "1")}
    assert orders["0"] == ["base", "cand", "down"] and orders["1"] == ["cand", "down", "base"]
    assert all("127.0.0.1:9" in o["error"] for o in outcomes if not o["ok"])
    gates = {(g["lane"], g["candidate"]): g["verdict"] for g in summary["gates"]}
    assert gates[("0", "down")] == "NOT RUN" and gates[("0", "cand")] in ("PASS", "INCONCLUSIVE")
    report = (night / "night.md").read_text()
    assert "What failed" in report and "down" in report and (night / "night.html").exists()
    rows = sqlite3.connect(tmp_path / "history.sqlite").execute(
        "SELECT variant, lane, status, night_id FROM runs ORDER BY variant, lane").fetchall()
    assert rows == [("base", "0", "complete", "2026-12-01"), ("base", "1", "complete", "2026-12-01"),
                    ("cand", "0", "complete", "2026-12-01"), ("cand", "1", "complete", "2026-12-01"),
                    ("down", "0", "failed", "2026-12-01"), ("down", "1", "failed", "2026-12-01")]
    assert "exit 2" in result.stdout
    # The verdicts and the report rebuild from the files and the history alone.
    (night / "night.md").unlink()
    rebuilt = cli("nightly", "--config", tmp_path / "night.yaml", "--night-id", "2026-12-01", "--report-only")
    assert rebuilt.returncode == 2 and "What failed" in (night / "night.md").read_text(), rebuilt.stderr
    assert json.loads((night / "night.json").read_text())["gates"] == summary["gates"]


def test_a_server_that_dies_at_start_is_reported_with_its_log_tail(tmp_path, mock_server):
    server = mock_server()
    fake_python = tmp_path / "python"
    fake_python.write_text("#!/bin/sh\necho 'torch.OutOfMemoryError: CUDA out of memory (fake)'\nexit 1\n")
    fake_python.chmod(0o755)
    variant = tmp_path / "broken.yaml"
    variant.write_text(f"name: broken\nmodel: {tmp_path}\nserver: {{python: {fake_python}}}\n")
    config = night_config(tmp_path, server.url, lanes="[]", down=f"{{variant: {variant}, name: down}}")
    result = bench("nightly", "--config", config, "--night-id", "n1", timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    summary = json.loads((tmp_path / "nightly" / "n1" / "night.json").read_text())
    (failed,) = [o for o in summary["outcomes"] if not o["ok"]]
    assert failed["label"] == "down" and "exited with code 1" in failed["error"]
    assert "CUDA out of memory (fake)" in failed["log_tail"]
    report = (tmp_path / "nightly" / "n1" / "night.html").read_text()
    assert "CUDA out of memory (fake)" in report and "What failed" in report
    again = cli("nightly", "--config", config, "--night-id", "n1")
    assert again.returncode == 2 and "already ran" in again.stderr and again.stderr.count("\n") == 1


def test_ctrl_c_stops_the_night_and_keeps_what_finished(tmp_path, mock_server):
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT
    from tests.timing import SCHEDULING_SLACK_S

    # Every answer takes 1 s + the allowance: a run of 4 items, 2 in flight, takes two of them in turn.
    server = mock_server("--ttft-ms", str(int((1 + SCHEDULING_SLACK_S) * 1000)))
    third = f'{{variant: cpu-tiny, name: third, base_url: "{server.url}"}}'
    config = night_config(tmp_path, server.url, lanes="[]", down=third)
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "nightly", "--config", str(config), "--night-id",
                             "n1"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    night = tmp_path / "nightly" / "n1"
    baseline_requests = 4  # limit: 4, no warm-up, no failures
    deadline = time.monotonic() + 120
    while len(server.received()) <= baseline_requests:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "cand never sent a request"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # cand has sent its first requests: their answers, and two more, are still due
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    rows = sqlite3.connect(tmp_path / "history.sqlite").execute("SELECT variant, status FROM runs").fetchall()
    assert ("base", "complete") in rows and ("cand", "incomplete") in rows  # the interrupted run, resumable
    assert not [r for r in rows if r[0] == "third"]  # the third never started
    assert not list(night.glob("*-02-third-c2"))


def test_a_night_into_a_shared_postgresql_history(tmp_path, mock_server, postgres_url):
    """The history on PostgreSQL (a throwaway server): the night's rows land there, a failed run's
    too, and the verdicts and report rebuild from it."""
    from harness.history import History

    server = mock_server("--answer", "4")
    config = night_config(tmp_path, server.url, lanes="[]")
    config.write_text(config.read_text().replace(f"history: {tmp_path / 'history.sqlite'}", f"history: {postgres_url}")
                      .replace("limit: 4", "limit: 2"))
    result = bench("nightly", "--config", config, "--night-id", "2026-12-02", timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr  # the variant whose server is down
    with History(postgres_url, create=False) as history:
        assert sorted((r.variant, r.status) for r in history.rows()) == [
            ("base", "complete"), ("cand", "complete"), ("down", "failed")]
    assert not (tmp_path / "history.sqlite").exists()
    rebuilt = bench("nightly", "--config", config, "--night-id", "2026-12-02", "--report-only")
    assert rebuilt.returncode == 2 and (tmp_path / "nightly" / "2026-12-02" / "night.html").exists(), rebuilt.stderr
