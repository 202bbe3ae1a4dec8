"""The raw streaming client against the real vLLM CPU engine (uvicorn's chunked SSE, keep-alive)."""

import asyncio

import pytest

from harness.client import ChatClient, RequestBuilder
from harness.config import Sampling, default_engine_venv, load_suite_spec, load_variant
from harness.progress import PlainProgress
from harness.runner import resolve_model_path
from harness.server import LaunchedServer
from harness.suite import load_suite

pytestmark = [pytest.mark.engine,
              pytest.mark.skipif(not (default_engine_venv() / "bin" / "python").exists(),
                                 reason="vLLM CPU engine not built (nox -s engine)")]


def test_streams_from_vllm_on_reused_connections_in_two_event_loops(tmp_path):
    variant = load_variant("cpu-tiny")
    items = load_suite(load_suite_spec("default"), limit=3).items
    model_path, _ = resolve_model_path(variant, True, PlainProgress())
    with LaunchedServer(variant, model_path, tmp_path, load_format_dummy=True) as server:
        client = ChatClient(server.base_url)
        builder = RequestBuilder(server.model, Sampling(max_tokens=6, ignore_eos=True), 6)

        async def phase():
            results = [await client.stream(builder.body(item, 1), 120.0) for item in items]
            results += await asyncio.gather(*(client.stream(builder.body(item, 2), 120.0) for item in items))
            await client.close()
            return results

        results = asyncio.run(phase()) + asyncio.run(phase())  # warm-up loop, then measured loop
        for r in results:
            assert r.status == "ok", r.error
            assert r.completion_tokens == 6 and r.prompt_tokens > 50 and r.finish_reason == "length"
            assert r.first_token_ns is not None and r.start_ns < r.first_token_ns <= r.end_ns
            assert 1 <= len(r.token_times_ns) <= 6 and r.model == server.model
