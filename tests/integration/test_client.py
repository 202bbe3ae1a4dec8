"""The streaming client against the mock server as a real process on loopback."""

from __future__ import annotations

import asyncio
import json
import time

import pandas as pd
import pytest

from harness.client import (
    ChatClient,
    RequestBuilder,
    StreamResult,
    build_request,
    encode_body,
    parse_retry_after,
    retry_delay_s,
)
from harness.config import Sampling
from harness.suite import SuiteItem
from tests.conftest import bench
from tests.timing import SCHEDULING_SLACK_S

ITEM = SuiteItem(id="i1", task="t", metric="exact_match", prompt="What?", references=("a",),
                 image_bytes=b"\x89PNG fake", image_mime="image/png")


def body(model: str = "mock", max_tokens: int = 8) -> bytes:
    return RequestBuilder(model, Sampling(), max_tokens).body(ITEM, 7)


def send(url: str, n: int = 1, timeout_s: float = 5.0, **kw) -> list[StreamResult]:
    async def go():
        async with ChatClient(url + "/v1") as client:
            return [await client.stream(body(**kw), timeout_s) for _ in range(n)]
    return asyncio.run(go())


def test_answer_usage_reasoning_and_cached_tokens_are_captured(mock_server):
    server = mock_server("--tokens", "6", "--answer", "think more then the answer is 30")
    server.control(reasoning_tokens=3, cached_tokens=64)
    r = send(server.url)[0]
    assert r.status == "ok" and r.anomaly is None
    assert r.reasoning_text == "think more then" and r.text == "the answer is"  # words 4..6; thought kept apart
    assert (r.prompt_tokens, r.completion_tokens, r.cached_tokens, r.reasoning_tokens) == (100, 6, 64, 3)
    assert len(r.token_times_ns) == 6 and r.first_token_ns == r.token_times_ns[0] and r.finish_reason == "length"
    server.control(reasoning_field="reasoning")  # the newer vLLM field name
    assert send(server.url)[0].reasoning_text == "think more then"
    sent = server.received()[0]
    assert sent["top_k"] == 64 and "extra_body" not in sent and sent["seed"] == 7  # vLLM reads top_k at top level


@pytest.mark.parametrize("odd, anomaly, text", [
    ("surrogate", "lone surrogate", "\ufffd token"),
    ("non_string", "non-string content (int)", "42 token"),
    ("bad_usage", "usage.prompt_tokens is not a count", "token token"),
    ("no_usage", "without a usage report", "token token"),
])
def test_odd_answers_are_kept_ok_with_the_anomaly_named(mock_server, odd, anomaly, text):
    server = mock_server("--tokens", "2")
    server.control(odd=odd)
    r = send(server.url)[0]
    assert r.status == "ok" and anomaly in r.anomaly and r.text == text
    r.text.encode("utf-8")  # storable
    if odd == "bad_usage":
        assert r.prompt_tokens is None and r.completion_tokens is None and "2.5" in r.anomaly


def test_one_client_serves_two_event_loops_on_keep_alive_connections(mock_server):
    """The warm-up bug: one client used in two asyncio.run calls against a keep-alive server."""
    server = mock_server("--keep-alive", "--tokens", "4", "--ttft-ms", "1", "--itl-ms", "0")
    client = ChatClient(server.url + "/v1")
    for _ in range(2):  # warm-up loop, then the measured loop
        results = asyncio.run(_many(client, 6))
        assert [r.status for r in results] == ["ok"] * 6 and all(r.completion_tokens == 4 for r in results)


async def _many(client: ChatClient, n: int) -> list[StreamResult]:
    first = [await client.stream(body(), 5.0) for _ in range(2)]  # sequential: reuses one connection
    rest = await asyncio.gather(*(client.stream(body(), 5.0) for _ in range(n - 2)))
    return [*first, *rest]


@pytest.mark.parametrize("status, kind", [(429, "http_429"), (503, "http_5xx")])
def test_retry_after_is_read_and_the_failure_is_transient(mock_server, status, kind):
    server = mock_server()
    server.control(mode="unavailable", unavailable_status=status, retry_after="2", mode_times=1)
    r = send(server.url)[0]
    assert (r.status, r.http_status, r.retry_after_s, r.transient) == (kind, status, 2.0, True)
    assert retry_delay_s(r, attempt=1) == 2.0
    assert send(server.url)[0].status == "ok"  # mode_times=1: the next request is answered


def test_retry_after_reads_seconds_and_http_dates():
    assert parse_retry_after("7") == 7.0 and parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now_s=1445412480.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now_s=1445412500.0) == 0.0  # in the past
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None and parse_retry_after("-3") is None


def test_retry_after_is_bounded():
    far = StreamResult(0, 0, None, (), "", None, None, None, None, "http_429", 429, None, retry_after_s=3600)
    assert retry_delay_s(far, 1) == 30.0
    plain = StreamResult(0, 0, None, (), "", None, None, None, None, "http_5xx", 500, None)
    assert (retry_delay_s(plain, 1), retry_delay_s(plain, 3)) == (0.5, 2.0)


@pytest.mark.parametrize("mode, gap_s, bound_s", [("keepalive_only", 0.5, 0.5), ("endless", None, 1.0),
                                                   ("hang", None, 1.0)])
def test_timeout_bounds_the_whole_request(mock_server, mode, gap_s, bound_s):
    server = mock_server("--itl-ms", "50")
    server.control(mode=mode)

    async def go():
        async with ChatClient(server.url + "/v1") as client:
            return await client.stream(body(), 1.0 if gap_s is None else 3.0, gap_s)

    t0 = time.monotonic()
    r = asyncio.run(go())
    took = time.monotonic() - t0
    assert r.status == "timeout" and bound_s * 0.95 <= took < bound_s + SCHEDULING_SLACK_S, (r.error, took)
    if mode == "keepalive_only":
        assert "keep-alive comments do not count" in r.error
    if mode == "endless":
        assert "in total" in r.error and len(r.token_times_ns) > 5  # tokens kept coming; the total bound ended it


def test_ttft_and_e2e_follow_the_server_delays(mock_server):
    # 100 ms to the first token, then 4 gaps of 150 ms: the answer's end comes later than the first
    # token plus the slack, so a TTFT taken anywhere but at the first token fails.
    server = mock_server("--ttft-ms", "100", "--itl-ms", "150", "--tokens", "5")
    r = send(server.url)[0]
    ttft, e2e = (r.first_token_ns - r.start_ns) / 1e9, (r.end_ns - r.start_ns) / 1e9
    assert 0.100 <= ttft < 0.100 + SCHEDULING_SLACK_S < 0.700 <= e2e < 0.700 + SCHEDULING_SLACK_S, (ttft, e2e)


def test_bodies_are_built_once_and_merge_vllm_fields():
    builder = RequestBuilder("m", Sampling(ignore_eos=True), 16)
    first = builder.body(ITEM, 1)
    assert builder.parts(ITEM, 1) is builder.parts(ITEM, 1) and builder.parts(ITEM, 2) is not builder.parts(ITEM, 1)
    assert builder.parts(ITEM, 1)[1] is builder.parts(ITEM, 2)[1]  # one copy of the image per item
    other = RequestBuilder("m", Sampling(), 16)
    other.prepare([ITEM])
    assert set(other._urls) == {ITEM.id}  # encoded ahead, before any body is asked for
    # The image spliced into the encoded small body gives the very bytes of encoding the whole request.
    assert first == encode_body(build_request(ITEM, "m", Sampling(ignore_eos=True), 16, 1))
    sent = json.loads(first)
    assert sent["ignore_eos"] is True and sent["top_k"] == 64 and "extra_body" not in sent
    assert encode_body({"a": 1, "extra_body": {"b": 2}}) == b'{"a":1,"b":2}'


def test_a_run_with_odd_answers_completes_and_reports(mock_server, tmp_path):
    server = mock_server("--tokens", "3")
    server.control(odd="mixed")
    result = bench("run", "--base-url", server.url, "--results-dir", tmp_path, "--run-id", "odd", "--idle-s", "0",
                   "--limit", "4")
    assert result.returncode == 0, result.stderr
    requests = pd.read_parquet(tmp_path / "odd" / "requests.parquet")
    assert (requests["status"] == "ok").all() and requests["anomaly"].notna().all()
    assert bench("report", tmp_path / "odd").returncode == 0
