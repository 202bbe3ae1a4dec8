"""The measurement protocol against the real vLLM CPU engine: cached prompt tokens are reported and
counted, the cache-reset routes make a repeated prompt first-seen again, and the competition replay
runs cold and warm passes on one fresh server."""

import asyncio
import dataclasses
import json

import openai
import pandas as pd
import pytest

from harness.client import build_request, stream_chat
from harness.config import Sampling, default_engine_venv, load_suite_spec, load_variant
from harness.progress import PlainProgress
from harness.protocol import reset_caches
from harness.runner import resolve_model_path
from harness.server import LaunchedServer
from harness.suite import load_suite
from tests.conftest import bench

pytestmark = [pytest.mark.engine,
              pytest.mark.skipif(not (default_engine_venv() / "bin" / "python").exists(),
                                 reason="vLLM CPU engine not built (nox -s engine)")]


def _ask(server, item):
    async def once():
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="EMPTY", max_retries=0)
        try:
            request = build_request(item, server.model, Sampling(max_tokens=4), 4, seed=1)
            return await stream_chat(client, request, 120.0)
        finally:
            await client.close()
    return asyncio.run(once())


def test_cached_tokens_are_reported_and_reset_clears_the_caches(tmp_path):
    variant = load_variant("cpu-tiny")
    # The CPU engine caches whole blocks of 512 prompt tokens (its KV block size for this hybrid
    # sliding-window model): the suite's ~150-token prompts are too short to ever hit, so lengthen one.
    item = load_suite(load_suite_spec("default"), limit=1).items[0]
    item = dataclasses.replace(item, prompt=item.prompt + " " + "word " * 120)
    model_path, _ = resolve_model_path(variant, True, PlainProgress())
    with LaunchedServer(variant, model_path, tmp_path, load_format_dummy=True) as server:
        first, again = _ask(server, item), _ask(server, item)
        assert first.status == "ok" and again.status == "ok"
        assert first.cached_tokens == 0
        # The same image and prompt again: the server serves most of the prompt from its prefix cache.
        assert again.cached_tokens >= 512 and again.cached_tokens >= 0.5 * again.prompt_tokens
        reset = reset_caches(server.base_url)
        assert reset.complete, reset.describe()
        after = _ask(server, item)
        assert after.cached_tokens == 0, "after a reset the repeated prompt must be first-seen again"


def test_competition_replay_cold_and_warm_through_the_cli(tmp_path):
    result = bench("run", "--variant", "cpu-tiny", "--protocol", "competition", "--limit", "4",
                   "--concurrency", "2", "--warmup", "8", "--results-dir", tmp_path, "--run-id", "comp",
                   timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = tmp_path / "comp"
    competition = json.loads((folder / "competition.json").read_text())
    assert competition["protocol"] == "competition"
    assert competition["cold"]["requests"] == competition["warm"]["requests"] == 4
    assert competition["cache_reset_between_passes"]["reset_prefix_cache"] is True
    command = competition["server_command"]
    assert "--config" in command and "--enable-prompt-tokens-details" in command
    cold = pd.read_parquet(folder / "cold" / "requests.parquet")
    warm = pd.read_parquet(folder / "warm" / "requests.parquet")
    # Every item once per pass, and no warm request hit a cache entry of the cold pass or the warm-up.
    assert sorted(cold["item_id"]) == sorted(warm["item_id"])
    assert (cold["cached_tokens"] == 0).all() and (warm["cached_tokens"] == 0).all()
    warm_manifest = json.loads((folder / "warm" / "manifest.json").read_text())
    warmup = warm_manifest["segments"][0]["warmup"]
    assert warmup["requests"] >= 4 and warmup["rounds"] >= 2
    assert "cold:" in result.stdout and "warm:" in result.stdout
