"""Per-request faults and bad input against real processes (the mock server told to misbehave)."""

import json
import os
import stat

import pandas as pd

from tests.conftest import bench, cli


def run(server, tmp_path, run_id, *extra, env=None):
    """In-process, or as a `bench` subprocess when the environment must differ."""
    args = ["run", "--base-url", server.url, "--results-dir", tmp_path, "--run-id", run_id, "--idle-s", "0", *extra]
    return bench(*args, env=env) if env else cli(*args)


def test_hanging_server_requests_time_out_and_the_run_stops_on_too_many_failures(mock_server, tmp_path):
    server = mock_server()
    server.control(mode="hang")
    result = run(server, tmp_path, "hang", "--limit", "12", "--timeout", "1", "--max-retries", "0",
                 "--concurrency", "6")
    assert result.returncode == 4 and "more than the allowed 50%" in result.stderr
    requests = pd.read_parquet(tmp_path / "hang" / "requests.parquet")
    assert len(requests) >= 10 and (requests["status"] == "timeout").all()
    manifest = json.loads((tmp_path / "hang" / "manifest.json").read_text())
    assert manifest["status"] == "incomplete" and "failed" in manifest["incomplete_cause"]


def test_reset_and_garbage_streams_are_recorded_with_their_kind(mock_server, tmp_path):
    server = mock_server("--tokens", "6")
    for mode, status in (("reset", "connection"), ("garbage", "protocol"), ("error_500", "http_5xx")):
        server.control(mode=mode)
        assert run(server, tmp_path, mode, "--limit", "2", "--max-retries", "1").returncode == 0
        requests = pd.read_parquet(tmp_path / mode / "requests.parquet")
        assert len(requests) == 4 and (requests["status"] == status).all()  # 2 items x 2 attempts
        assert requests["retried"].sum() == 2 and requests["error"].notna().all()


def test_server_crash_mid_run_keeps_what_was_measured(mock_server, tmp_path):
    server = mock_server("--ttft-ms", "50")
    server.control(crash_after=5)  # the process exits on the 6th request
    result = run(server, tmp_path, "crash", "--limit", "40", "--max-retries", "1")
    assert result.returncode == 4 and "stopped answering" in result.stderr and "--resume" in result.stderr
    requests = pd.read_parquet(tmp_path / "crash" / "requests.parquet")
    assert (requests["status"] == "ok").sum() >= 3
    summary = json.loads((tmp_path / "crash" / "summary.json").read_text())
    assert any(flag.startswith("incomplete") for flag in summary["flags"])


def test_api_key_is_never_written(mock_server, tmp_path):
    server = mock_server()
    secret = "sk-very-secret-4242"
    assert run(server, tmp_path, "key", "--limit", "2", env={"BENCH_API_KEY": secret}).returncode == 0
    assert cli("report", tmp_path / "key").returncode == 0
    for path in (tmp_path / "key").iterdir():
        assert secret.encode() not in path.read_bytes(), path.name


def test_unwritable_results_folder_is_refused_before_the_run(mock_server, tmp_path):
    server = mock_server()
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = cli("run", "--base-url", server.url, "--results-dir", blocker / "results", "--idle-s", "0")
    assert result.returncode == 2 and "is not writable" in result.stderr
    assert len(server.received()) == 0


def test_shell_metacharacters_in_a_variant_stay_one_argument(tmp_path):
    fake = tmp_path / "fake-python"
    record = tmp_path / "argv.json"
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {record}\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    canary = tmp_path / "pwned"
    variant = tmp_path / "evil.yaml"
    variant.write_text(f"name: evil\nmodel: 'org/m; touch {canary}'\nserved_model_name: '$(touch {canary})'\n"
                       f"server: {{python: '{fake}', startup_timeout_s: 20}}\n"
                       f"vllm: {{dtype: 'bf16 && touch {canary}'}}\n")
    result = cli("run", "--variant", variant, "--results-dir", tmp_path / "r", "--idle-s", "0", "--energy", "none")
    assert result.returncode == 2 and "exited with code 3 during start-up" in result.stderr
    argv = record.read_text().splitlines()
    assert f"org/m; touch {canary}" in argv and f"$(touch {canary})" in argv
    assert not canary.exists()


def test_result_folder_from_a_newer_schema_is_refused(tmp_path, mock_server):
    server = mock_server()
    assert run(server, tmp_path, "new", "--limit", "1").returncode == 0
    manifest = tmp_path / "new" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["schema_version"] = 99
    manifest.write_text(json.dumps(data))
    result = cli("report", tmp_path / "new")
    assert result.returncode == 2 and "schema 99" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_journal_survives_a_torn_last_line(tmp_path, mock_server):
    server = mock_server()
    assert run(server, tmp_path, "torn", "--limit", "3").returncode == 0
    journal = tmp_path / "torn" / "requests.jsonl"
    with open(journal, "a") as f:
        f.write('{"run_id": "torn", "item_id": "half')  # a crash in the middle of a write
    os.remove(tmp_path / "torn" / "requests.parquet")
    result = cli("reanalyze", tmp_path / "torn")
    assert result.returncode == 0 and len(pd.read_parquet(tmp_path / "torn" / "requests.parquet")) == 3
