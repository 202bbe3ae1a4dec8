"""`bench gate` end to end on real runs against the mock server: exit codes and refusals."""

import pandas as pd
import pytest

from tests.conftest import bench, cli, start_mock


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Full-suite runs: two answering "A" (right on choice items whose answer is A), one "Z", one at
    another temperature."""
    root = tmp_path_factory.mktemp("gate")
    made = {}
    plan = [("a1", "A", []), ("a2", "A", []), ("z", "Z", []), ("hot", "A", ["--temperature", "0.7"])]
    for name, answer, extra in plan:
        server = start_mock("--answer", answer, "--ttft-ms", "1", "--itl-ms", "0")
        try:
            result = cli("run", "--base-url", server.url, "--results-dir", root, "--run-id", name, "--idle-s", "0",
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
    result = cli("gate", "--baseline", runs["a1"], "--candidate", runs["z"])
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
        result = cli("gate", *args)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_score_command_reports_tasks(runs):
    result = cli("score", runs["a1"])
    assert result.returncode == 0 and "choice" in result.stdout


def edited_copy(run, target, **manifest_changes):
    import json
    import shutil

    shutil.copytree(run, target)
    m = json.loads((target / "manifest.json").read_text())
    for key, value in manifest_changes.items():
        if key == "samples":
            m["settings"]["samples"] = value
        else:
            m[key] = value
    (target / "manifest.json").write_text(json.dumps(m))
    return target


def test_gate_refuses_incomplete_or_different_k_unless_forced(runs, tmp_path):
    """Issue 10 item 14."""
    unfinished = edited_copy(runs["a2"], tmp_path / "unfinished", status="incomplete")
    other_k = edited_copy(runs["a2"], tmp_path / "k3", samples=3)
    for candidate, message in ((unfinished, "is incomplete, not complete"), (other_k, "samples per item differ")):
        refused = cli("gate", "--baseline", runs["a1"], "--candidate", candidate)
        assert refused.returncode == 2 and message in refused.stderr and "--force" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        assert cli("gate", "--baseline", runs["a1"], "--candidate", candidate, "--force").returncode == 0


def test_gate_json_is_strict(runs):
    import json

    result = cli("gate", "--baseline", runs["a1"], "--candidate", runs["z"], "--json")
    doc = json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"{c} in gate JSON"))
    assert doc["overall"]["verdict"] == "FAIL"


@pytest.mark.parametrize("resamples", ["0", "-1", "1"])
def test_gate_needs_a_sane_number_of_resamples(runs, resamples):
    """Issue 10 item 17: one resample once gave PASS."""
    result = cli("gate", "--baseline", runs["a1"], "--candidate", runs["a2"], "--resamples", resamples)
    assert result.returncode == 2 and "--resamples must be at least 1000" in result.stderr


def test_compare_folder_is_named_after_the_runs(runs):
    """Issue 10, also: no shared ./results/compare overwritten by every comparison."""
    result = cli("compare", runs["a1"], runs["z"])
    assert result.returncode == 0, result.stderr
    assert (runs["a1"].parent / "compare-a1-vs-z" / "compare.md").exists()
