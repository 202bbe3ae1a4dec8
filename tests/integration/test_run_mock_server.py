"""`bench run` end to end against the project's OpenAI-compatible mock server on loopback."""

import json

import pandas as pd

from tests.conftest import bench, cli


def run_args(server, tmp_path, *extra):
    return ["run", "--base-url", server.url, "--results-dir", tmp_path, "--idle-s", "0", *extra]


def test_run_records_every_request_and_sends_competition_sampling(mock_server, tmp_path):
    server = mock_server("--tokens", "5")
    result = bench(*run_args(server, tmp_path, "--limit", "14", "--concurrency", "3", "--run-id", "r1",
                             "--warmup", "2"))
    assert result.returncode == 0, result.stderr
    run = tmp_path / "r1"
    requests = pd.read_parquet(run / "requests.parquet")
    assert len(requests) == 14 and (requests["status"] == "ok").all()
    assert requests["item_id"].is_unique and set(requests["task"]) >= {"ocr", "chart", "caption"}
    assert (requests["completion_tokens"] == 5).all() and (requests["prompt_tokens"] == 100).all()
    assert (requests["ttft_s"] > 0.015).all() and (requests["e2e_s"] >= requests["ttft_s"]).all()
    assert requests["itl_mean_s"].notna().all()
    bodies = server.received()
    assert len(bodies) == 16  # 2 warm-up + 14 recorded
    for body in bodies:
        assert (body["temperature"], body["top_p"], body["top_k"]) == (1.0, 0.95, 64)
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
        content = body["messages"][0]["content"]
        assert content[0]["type"] == "image_url" and content[1]["type"] == "text"
        assert content[0]["image_url"]["url"].startswith("data:image/png;base64,")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["sampling_sent"] == {"temperature": 1.0, "top_p": 0.95, "max_tokens": 32, "top_k": 64}
    assert manifest["server"]["vllm_version"] == "mock-1.0" and len(manifest["suite"]["hash"]) == 64
    summary = json.loads((run / "summary.json").read_text())
    assert summary["latency"]["ok"] == 14 and summary["latency"]["ttft_s"]["p50"] > 0
    assert summary["energy"]["available"] is False and "NVML" in summary["energy"]["unavailable_reason"]
    assert (run / "requests.jsonl").read_text().count("\n") == 14
    assert "energy: unavailable" in result.stdout


def test_overridden_sampling_and_samples_per_item(mock_server, tmp_path):
    server = mock_server()
    result = cli(*run_args(server, tmp_path, "--limit", "3", "--samples", "2", "--temperature", "0.5",
                             "--top-k", "10", "--run-id", "r2", "--seed", "5"))
    assert result.returncode == 0, result.stderr
    requests = pd.read_parquet(tmp_path / "r2" / "requests.parquet")
    assert len(requests) == 6 and sorted(requests["sample_index"].unique()) == [0, 1]
    assert requests["seed"].is_unique
    assert {(b["temperature"], b["top_k"]) for b in server.received()} == {(0.5, 10)}


def test_transient_failures_are_retried_and_every_attempt_recorded(mock_server, tmp_path):
    server = mock_server("--fault-rate", "0.3", "--seed", "1")
    result = cli(*run_args(server, tmp_path, "--limit", "20", "--run-id", "r3", "--max-retries", "5"))
    assert result.returncode == 0, result.stderr
    requests = pd.read_parquet(tmp_path / "r3" / "requests.parquet")
    final = requests[~requests["retried"]]
    assert len(final) == 20 and (final["status"] == "ok").all()
    retried = requests[requests["retried"]]
    assert len(retried) > 0 and set(retried["status"]) <= {"http_5xx", "connection", "protocol"}
    assert len(requests) == len(server.received())  # every attempt is on disk


def test_wrong_model_answer_is_a_recorded_failure(mock_server, tmp_path):
    server = mock_server()
    server.control(mode="wrong_model")
    result = cli(*run_args(server, tmp_path, "--limit", "3", "--run-id", "r4"))
    requests = pd.read_parquet(tmp_path / "r4" / "requests.parquet")
    assert (requests["status"] == "wrong_model").all()
    assert result.returncode == 0  # 3 failures of 3 < 10 finished: no abort rule yet


def test_bad_inputs_give_one_line_errors(mock_server, tmp_path):
    cases = [
        (["run", "--variant", "nope", "--results-dir", tmp_path], "unknown variant 'nope'"),
        (["run", "--base-url", "http://127.0.0.1:9", "--results-dir", tmp_path], "cannot reach"),
        (["run", "--suite", "nosuch", "--results-dir", tmp_path], "unknown suite 'nosuch'"),
        (["run", "--base-url", "http://127.0.0.1:9", "--concurrency", "0", "--results-dir", tmp_path],
         "--concurrency must be"),
        (["score", tmp_path / "missing"], "not found"),
    ]
    for args, message in cases:
        result = cli(*args)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr, result.stderr


def test_a_server_that_is_not_openai_compatible_is_refused(tmp_path):
    import http.server
    import threading

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        result = cli("run", "--base-url", f"http://127.0.0.1:{httpd.server_address[1]}", "--results-dir", tmp_path)
    finally:
        httpd.shutdown()
    assert result.returncode != 0 and "not an OpenAI-compatible server" in result.stderr


def test_same_run_id_twice_is_refused(mock_server, tmp_path):
    server = mock_server()
    assert cli(*run_args(server, tmp_path, "--limit", "1", "--run-id", "dup")).returncode == 0
    second = cli(*run_args(server, tmp_path, "--limit", "1", "--run-id", "dup"))
    assert second.returncode != 0 and "already exists" in second.stderr


def test_samples_give_per_item_mean_and_spread(mock_server, tmp_path):
    server = mock_server("--answer", "A")
    assert cli(*run_args(server, tmp_path, "--limit", "7", "--samples", "3", "--run-id", "k3")).returncode == 0
    items = pd.read_parquet(tmp_path / "k3" / "items.parquet")
    assert len(items) == 7 and (items["samples"] == 3).all()
    assert {"score_mean", "score_std", "energy_j_mean"} <= set(items.columns)


def test_energy_required_without_nvml_is_a_one_line_error(mock_server, tmp_path):
    server = mock_server()
    result = cli(*run_args(server, tmp_path, "--limit", "1", "--energy", "nvml"))
    assert result.returncode == 2 and "NVML is not available" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_values_that_were_silently_defaulted_are_refused(mock_server, tmp_path):
    """Issue 10 item 17: no run with 0 requests, no default swapped in for an explicit 0, no
    option silently dropped on --resume, no traceback for --out naming a file."""
    server = mock_server("--ttft-ms", "1", "--itl-ms", "0")
    base = ["run", "--base-url", server.url, "--results-dir", tmp_path, "--idle-s", "0", "--limit", "2"]
    assert cli(*base, "--run-id", "ok").returncode == 0
    (tmp_path / "file").write_text("x")
    cases = [
        ([*base, "--max-retries", "-1"], "--max-retries must be"),
        ([*base, "--timeout", "0"], "--timeout must be"),
        ([*base, "--max-tokens", "0"], "--max-tokens must be"),
        (["run", "--resume", tmp_path / "ok", "--concurrency", "4", "--samples", "2"],
         "--concurrency, --samples cannot change on --resume"),
        (["report", tmp_path / "ok", "--out", tmp_path / "file"], "is a file"),
        (["compare", tmp_path / "ok", tmp_path / "ok", "--out", tmp_path / "file"], "is a file"),
    ]
    for args, message in cases:
        result = cli(*args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "ok"]  # nothing half-made


def test_report_and_compare_of_a_killed_run_rebuild_from_the_journal(mock_server, tmp_path):
    """Issue 10 item 17: a run killed before finalisation has only its journal and manifest."""
    import json

    server = mock_server("--ttft-ms", "1", "--itl-ms", "0")
    for name in ("a", "b"):
        assert cli("run", "--base-url", server.url, "--results-dir", tmp_path, "--run-id", name, "--idle-s", "0",
                   "--limit", "3").returncode == 0
    killed = tmp_path / "b"
    for name in ("summary.json", "requests.parquet", "items.parquet"):
        (killed / name).unlink()
    manifest = json.loads((killed / "manifest.json").read_text())
    (killed / "manifest.json").write_text(json.dumps({**manifest, "status": "running", "segments": []}))
    report = cli("report", killed)
    assert report.returncode == 0, report.stderr
    assert "running" in (killed / "report.md").read_text()
    compared = cli("compare", tmp_path / "a", killed)
    assert compared.returncode == 0, compared.stderr
    assert "is running, not complete" in (tmp_path / "compare-a-vs-b" / "compare.md").read_text()
