"""A nightly of two cpu-tiny-based variants (max_num_seqs 4 vs 2) against the real vLLM CPU engine:
runs, SQLite history, night report, `bench history --html`."""

import json
import sqlite3
import textwrap

import pytest

from harness.config import default_engine_venv
from tests.conftest import bench

pytestmark = pytest.mark.engine
needs_engine = pytest.mark.skipif(not (default_engine_venv() / "bin" / "python").exists(),
                                  reason="vLLM CPU engine not built (nox -s engine)")


@needs_engine
def test_cpu_tiny_nightly_end_to_end(tmp_path):
    config = tmp_path / "night.yaml"
    db = tmp_path / "history.sqlite"
    config.write_text(textwrap.dedent(f"""
        baseline: {{variant: cpu-tiny, name: tiny-seqs4, vllm: {{max_num_seqs: 4}}}}
        candidates: [{{variant: cpu-tiny, name: tiny-seqs2, vllm: {{max_num_seqs: 2}}}}]
        limit: 3
        concurrency: [2]
        warmup: 1
        idle_s: 0
        repeats: 1
        results_dir: {tmp_path / "nightly"}
        history: sqlite:///{db}
        metrics: [quality, e2e_p50_s]
        """))
    result = bench("nightly", "--config", config, "--night-id", "2026-12-01", timeout=1500)
    assert result.returncode in (0, 1), result.stdout + result.stderr[-3000:]  # a random model may fail the gate
    night = tmp_path / "nightly" / "2026-12-01"
    summary = json.loads((night / "night.json").read_text())
    assert [(o["label"], o["ok"]) for o in summary["outcomes"]] == [("tiny-seqs4", True), ("tiny-seqs2", True)]
    for outcome in summary["outcomes"]:  # the override reached the server's own config
        run = json.loads((night / outcome["run_id"] / "manifest.json").read_text())
        assert run["variant"]["vllm"]["max_num_seqs"] == (4 if outcome["label"] == "tiny-seqs4" else 2)
        assert run["server"]["vllm_version"] == "0.32.0"
    assert summary["gates"][0]["verdict"] in ("PASS", "FAIL", "INCONCLUSIVE")
    assert (night / "night.html").exists() and "tiny-seqs2" in (night / "night.md").read_text()
    rows = sqlite3.connect(db).execute("SELECT variant, status, requests, e2e_p50_s FROM runs").fetchall()
    assert sorted(r[:3] for r in rows) == [("tiny-seqs2", "complete", 3), ("tiny-seqs4", "complete", 3)]
    assert all(r[3] > 0 for r in rows)
    page = bench("history", "--db", db, "--metric", "e2e_p50_s", "--html", tmp_path / "hist")
    assert page.returncode == 0 and "tiny-seqs2" in page.stdout, page.stderr
    assert (tmp_path / "hist" / "history.html").exists()
