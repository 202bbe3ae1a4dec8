"""OpenAI-compatible chat client: builds the request (pure) and streams one answer (I/O).

Every request is one user message with the image part first, then the text (the model card's
advice for Gemma 4), the image as a data URL of the suite's bytes. Sampling goes in the body:
temperature and top_p as OpenAI fields, top_k (and vLLM's ignore_eos) in the extra body."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass

import numpy as np

from harness.config import Sampling
from harness.suite import SuiteItem


def build_request(item: SuiteItem, model: str, sampling: Sampling, max_tokens: int, seed: int | None) -> dict:
    """The keyword arguments of `chat.completions.create` for one item."""
    data_url = f"data:{item.image_mime};base64,{base64.b64encode(item.image_bytes).decode('ascii')}"
    extra_body: dict = {"top_k": sampling.top_k}
    if sampling.ignore_eos:
        extra_body["ignore_eos"] = True
    if item.system_prompt:  # thinking on: keep <|channel>…<channel|> visible, so a thought block is cut off
        extra_body["skip_special_tokens"] = False  # (vLLM's Gemma 4 reasoning parser sets this itself)
    system = [{"role": "system", "content": item.system_prompt}] if item.system_prompt else []  # <|think|>
    request = {
        "model": model,
        "messages": [*system, {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url}},
            {"type": "text", "text": item.prompt},
        ]}],
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        "extra_body": extra_body,
    }
    if seed is not None:
        request["seed"] = seed
    return request


# Failures worth retrying: server-side or network trouble, not a bad request.
TRANSIENT_STATUSES = ("http_5xx", "timeout", "connection", "protocol")


@dataclass(frozen=True)
class StreamResult:
    """What came back for one request, timed on the monotonic clock."""

    start_ns: int
    end_ns: int
    first_token_ns: int | None
    token_times_ns: tuple[int, ...]  # arrival of every chunk that carried text
    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str | None
    model: str | None
    status: str = "ok"
    http_status: int | None = None
    error: str | None = None
    cached_tokens: int | None = None

    @property
    def transient(self) -> bool:
        return self.status in TRANSIENT_STATUSES

    def itl_stats(self) -> dict[str, float | None]:
        gaps = np.diff(np.asarray(self.token_times_ns, dtype=np.int64)) / 1e9
        if len(gaps) == 0:
            return {"itl_mean_s": None, "itl_p50_s": None, "itl_p90_s": None, "itl_max_s": None}
        return {"itl_mean_s": float(gaps.mean()), "itl_p50_s": float(np.percentile(gaps, 50)),
                "itl_p90_s": float(np.percentile(gaps, 90)), "itl_max_s": float(gaps.max())}


def _classify(exc: Exception) -> tuple[str, int | None]:
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return "timeout", None
    if isinstance(exc, openai.APIStatusError):
        return ("http_5xx" if exc.status_code >= 500 else "http_4xx"), exc.status_code
    if isinstance(exc, openai.APIConnectionError):
        return "connection", None
    return "protocol", None  # malformed SSE / JSON, unexpected payloads


async def stream_chat(client, request: dict, timeout_s: float) -> StreamResult:
    """Send one streaming request; never raises for a failed request (the failure is data)."""
    start = time.monotonic_ns()
    first, times, parts = None, [], []
    usage = finish = model = None
    try:
        stream = await client.chat.completions.create(**request, timeout=timeout_s)
        async for chunk in stream:
            now = time.monotonic_ns()
            model = chunk.model or model
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices or ():
                if choice.delta is not None and choice.delta.content:
                    parts.append(choice.delta.content)
                    times.append(now)
                    if first is None:
                        first = now
                if choice.finish_reason:
                    finish = choice.finish_reason
    except Exception as exc:  # every failure becomes a record; the run loop decides what next
        status, http_status = _classify(exc)
        return StreamResult(start, time.monotonic_ns(), first, tuple(times), "".join(parts), None,
                            None, finish, model, status, http_status, f"{type(exc).__name__}: {exc}"[:500])
    end = time.monotonic_ns()
    if usage is None:
        return StreamResult(start, end, first, tuple(times), "".join(parts), None, None, finish, model,
                            "protocol", None, "the stream ended without a usage report")
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) if details is not None else None
    return StreamResult(start, end, first, tuple(times), "".join(parts), usage.prompt_tokens,
                        usage.completion_tokens, finish, model, cached_tokens=cached)
