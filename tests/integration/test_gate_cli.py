"""`bench gate` end to end on real runs against the mock server: exit codes and refusals."""

import pandas as pd
import pytest

from tests.conftest import bench, start_mock


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three full-suite runs: two answering "A" (right on choice items whose answer is A), one "Z"."""
    root = tmp_path_factory.mktemp("gate")
    made = {}
    plan = [("a1", "A", []), ("a2", "A", []), ("z", "Z", []), ("hot", "A", ["--temperature", "0.7"])]
    for name, answer, extra in plan:
        server = start_mock("--answer", answer, "--ttft-ms", "1", "--itl-ms", "0")
        try:
            result = bench("run", "--base-url", server.url, "--results-dir", root, "--run-id", name, "--idle-s", "0",
                           "--concurrency", "8", *extra)
            assert result.returncode == 0, result.stderr
        finally:
            server.proc.kill()
        made[name] = root / name
    return made


def test_same_answers_pass(runs):
    result = bench("gate", "--baseline", runs["a1"], "--candidate", runs["a2"])
    assert result.returncode == 0, result.stderr
    assert "verdict: PASS" in result.stdout and "choice" in result.stdout


def test_lost_answers_fail(runs):
    result = bench("gate", "--baseline", runs["a1"], "--candidate", runs["z"])
    assert result.returncode == 1 and "verdict: FAIL" in result.stdout


def test_gate_refusals_are_one_line_errors(runs, tmp_path):
    no_scores = tmp_path / "noscores"
    no_scores.mkdir()
    for f in ("manifest.json", "summary.json"):
        (no_scores / f).write_bytes((runs["a2"] / f).read_bytes())
    pd.read_parquet(runs["a2"] / "requests.parquet").drop(columns=["score"]).to_parquet(no_scores / "requests.parquet")
    cases = [
        (["--baseline", runs["a1"], "--candidate", runs["hot"]], "sampling differs: temperature 1.0 vs 0.7"),
        (["--baseline", runs["a1"], "--candidate", runs["a2"], "--threshold", "1.5"], "--threshold must be in (0, 1]"),
        (["--baseline", runs["a1"], "--candidate", no_scores], "has no scores"),
    ]
    for args, message in cases:
        result = bench("gate", *args)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_score_command_reports_tasks(runs):
    result = bench("score", runs["a1"])
    assert result.returncode == 0 and "choice" in result.stdout
