"""Secrets in a variant's `env:` (HF_TOKEN, *_API_KEY, passwords) and `vllm:` blocks reach the server, and
nothing that a run stores: a real `bench run` launches a stand-in server (the mock OpenAI server behind
vLLM's command line, tests/faults/fake_vllm.py) with them, and every file of the run folder, the history
row, the report and the submission are searched for the values. The server's own log is not ours to filter."""

import json
import sqlite3
import sys
from pathlib import Path

import pytest

from harness.credentials import REDACTED, redact_secrets
from tests.conftest import bench, cli

FAKE_VLLM = Path(__file__).with_name("fake_vllm.py")
SECRETS = {
    "HF_TOKEN": "hf_QwErTy0123456789abcdef",
    "WANDB_API_KEY": "0123456789abcdef0123456789abcdef",
    "DB_PASSWORD": "hunter2-correct-horse",
    "MY_SECRET_SALT": "pepper-and-salt-42",
    "SOME_TOKEN": "opaque-token-value-77",
}
PROXY = "http://proxyuser:proxypass99@proxy.example:3128"


def secret_variant(tmp_path: Path) -> Path:
    python = tmp_path / "fake-python"  # records the environment the server got, then is the server
    python.write_text(f'#!/bin/sh\nenv > "{tmp_path}/server-env"\nexec "{sys.executable}" "{FAKE_VLLM}" "$@"\n')
    python.chmod(0o755)
    env = {**SECRETS, "HTTPS_PROXY": PROXY, "TOKENIZERS_PARALLELISM": "false", "VLLM_LOGGING_LEVEL": "INFO"}
    variant = {"name": "secretive", "model": "org/fake", "server": {"python": str(python), "startup_timeout_s": 60},
               "env": env, "vllm": {"max_num_seqs": 4, "hf_token": "hf_VllmBlock0123456789"}}
    path = tmp_path / "secretive.yaml"
    path.write_text(json.dumps(variant))  # YAML is a superset of JSON
    return path


def test_secrets_reach_the_server_and_no_stored_file(tmp_path):
    run = tmp_path / "results" / "r"
    result = bench("run", "--variant", secret_variant(tmp_path), "--results-dir", tmp_path / "results", "--run-id",
                   "r", "--idle-s", "0", "--limit", "2", "--energy", "none", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    seen = (tmp_path / "server-env").read_text()
    assert all(f"{k}={v}\n" in seen for k, v in SECRETS.items()) and f"HTTPS_PROXY={PROXY}" in seen

    manifest = json.loads((run / "manifest.json").read_text())
    env = manifest["variant"]["env"]
    assert {k: env[k] for k in SECRETS} == dict.fromkeys(SECRETS, REDACTED)  # keys kept: HF_TOKEN was set
    assert env["HTTPS_PROXY"] == "http://***@proxy.example:3128"
    assert env["TOKENIZERS_PARALLELISM"] == "false" and env["VLLM_LOGGING_LEVEL"] == "INFO"
    assert manifest["variant"]["vllm"] == {"max_num_seqs": 4, "hf_token": REDACTED}
    assert manifest["server"]["env_overrides"]["HF_TOKEN"] == REDACTED
    assert manifest["server"]["command"][-1]  # the command line is recorded (and searched below)

    # What is built from the run: the history row, the report, the submission.
    assert cli("history", "import", run, "--db", tmp_path / "h.sqlite").returncode == 0
    assert cli("report", run).returncode == 0
    submitted = cli("submit", run, "--baseline", run, "--out", tmp_path / "submission")
    assert (tmp_path / "submission").is_dir() and submitted.returncode in (0, 1), submitted.stderr
    row = sqlite3.connect(tmp_path / "h.sqlite").execute("SELECT * FROM runs").fetchone()
    assert row is not None
    stored = [p for p in [*run.rglob("*"), *(tmp_path / "submission").rglob("*"), tmp_path / "h.sqlite"]
              if p.is_file() and p.name != "server.log"]
    assert {p.name for p in stored} >= {"manifest.json", "summary.json", "requests.jsonl", "report.html"}
    values = [*SECRETS.values(), "proxypass99", "hf_VllmBlock0123456789"]
    leaks = [(p.name, v) for p in stored for v in values if v.encode() in p.read_bytes()]
    # vllm_config.yaml is vLLM's own --config file, which the server must read as the team wrote it.
    assert leaks == [("vllm_config.yaml", "hf_VllmBlock0123456789")], leaks


@pytest.mark.parametrize(("name", "secret"), [
    ("HF_TOKEN", True), ("HUGGING_FACE_HUB_TOKEN", True), ("OPENAI_API_KEY", True), ("VLLM_API_KEY", True),
    ("AWS_SECRET_ACCESS_KEY", True), ("AWS_SESSION_TOKEN", True), ("PGPASSWORD", True), ("DB_PASS", True),
    ("MY_SECRET_SALT", True), ("hf-token", True), ("api_key", True), ("GITHUB_PAT_TOKEN", True),
    ("AWS_ACCESS_KEY_ID", True), ("allowed_token_ids", False), ("key_mapping", False),
    ("TOKENIZERS_PARALLELISM", False), ("max_num_batched_tokens", False), ("VLLM_TEST_FORCE_FP8_MARLIN", False),
    ("CUDA_VISIBLE_DEVICES", False), ("tokenizer_mode", False), ("ssl_keyfile", False), ("GIT_AUTHOR_NAME", False),
])
def test_which_names_hold_secrets(name, secret):
    assert (redact_secrets({name: "x"})[name] == REDACTED) is secret


def test_known_token_shapes_are_redacted_under_any_name_and_nested_blocks_too():
    block = {"EXTRA": "hf_abcdefghijkl1234", "speculative_config": {"api_key": "k", "num_tokens": 3},
             "URL": "postgresql://u:pw@db/x", "PLAIN": "http://host/x"}
    assert redact_secrets(block) == {"EXTRA": REDACTED, "speculative_config": {"api_key": REDACTED, "num_tokens": 3},
                                     "URL": "postgresql://***@db/x", "PLAIN": "http://host/x"}


def test_the_server_record_keeps_no_secret():
    """What competition.json and the manifest take from a launched server."""
    from harness.server import ServerHandle

    handle = ServerHandle("http://127.0.0.1:1/v1", "m", True, env_overrides={"HF_TOKEN": "x", "VLLM_FOO": "1"})
    assert handle.env_overrides == {"HF_TOKEN": REDACTED, "VLLM_FOO": "1"}
