"""OpenAI-compatible chat client: builds the request (pure) and streams one answer (I/O).

Every request is one user message with the image part first, then the text (the model card's
advice for Gemma 4), the image as a data URL of the suite's bytes. Sampling goes in the body:
temperature and top_p as OpenAI fields, top_k (and vLLM's ignore_eos) beside them as vLLM reads them.

The stream is taken raw: one small HTTP/1.1 client on asyncio's transport/protocol layer (no
typed object per chunk, one JSON parse per server-sent event with orjson). Why not the `openai`
package: it built a pydantic object for every chunk (~35 % of the harness's CPU at high request
rates), and its timeout is per read, so a stream of keep-alive comments never timed out. What
we keep of its semantics: the base URL joined with `/chat/completions`, `Authorization: Bearer`,
and a failure kind per HTTP status. Timestamps are taken once per arrival of bytes from the socket
(`data_received`), before any parsing, so client work does not move them.

Proxies as the `openai` package (httpx) takes them from the environment: `http_proxy`/`HTTP_PROXY`,
`https_proxy`/`HTTPS_PROXY`, `all_proxy`/`ALL_PROXY` (an http:// proxy), `no_proxy`/`NO_PROXY`
(`*`, host names with their subdomains, IP addresses, CIDR blocks, optionally `:port`); loopback
targets are always reached directly. Plain http goes through the proxy in absolute form
(`POST http://host/v1/... HTTP/1.1`), https through a CONNECT tunnel. A proxy of another scheme
(socks5://, https://) is refused in one line. The routing is harness/proxies.py's, which also routes
bench's control calls (health, models, cache resets).

Connections are pooled per event loop: a `ChatClient` used from two `asyncio.run` calls (warm-up,
then the measured phase) opens new connections in the second loop instead of reusing the first
loop's transports (which failed with "Event loop is closed")."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import orjson

from harness.config import Sampling
from harness.proxies import ProxyRoute, proxy_route
from harness.suite import SuiteItem

USER_AGENT = "energy-harness"
RETRY_AFTER_MAX_S = 30.0  # a server's Retry-After is honoured up to this; beyond, the loop gives up sooner
RETRY_BACKOFF_S = 0.5  # first retry delay without Retry-After; doubles per attempt
CONNECT_TIMEOUT_MAX_S = 10.0  # connecting takes at most this (and never more than the request's total)


def build_request(item: SuiteItem, model: str, sampling: Sampling, max_tokens: int, seed: int | None,
                  data_url: str | None = None) -> dict:
    """The JSON body of one chat request (vLLM's extensions `top_k`/`ignore_eos` at the top level,
    where vLLM reads them; `extra_body` names them too, as the manifest's `sampling_sent` reads it)."""
    if data_url is None:
        data_url = image_data_url(item)
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


def image_data_url(item: SuiteItem) -> str:
    return f"data:{item.image_mime};base64,{base64.b64encode(item.image_bytes).decode('ascii')}"


def encode_body(request: dict) -> bytes:
    """The bytes sent: `extra_body` merged into the top level, as the openai package sends it."""
    flat = {k: v for k, v in request.items() if k != "extra_body"}
    flat.update(request.get("extra_body") or {})
    return orjson.dumps(flat)


class RequestBuilder:
    """Request bodies of one run: each image encoded to its data URL, as a JSON string, once per
    run; each body built once per (item, seed) and reused by every retry, and dropped with `forget`
    once sent. A body is the small request encoded with a marker in place of the image, the marker
    then replaced by the image's JSON bytes: encoding the ~50 KB data URL again for every seed was
    a tenth of the client's CPU at high request rates."""

    def __init__(self, model: str, sampling: Sampling, max_tokens: int):
        self.model, self.sampling, self.max_tokens = model, sampling, max_tokens
        self._urls: dict[str, bytes] = {}  # item id -> its data URL as a JSON string
        self._bodies: dict[tuple[str, int | None], tuple[bytes, bytes, bytes]] = {}
        self._marker = f"\x00image-{uuid.uuid4().hex}\x00"  # no prompt contains it
        self._marker_json = orjson.dumps(self._marker)

    def prepare(self, items) -> None:
        """Encode these items' images now (before a measured phase), not on the event loop while
        other requests are being timed: a megabyte image takes milliseconds to encode."""
        for item in items:
            self.data_url_json(item)

    def data_url_json(self, item: SuiteItem) -> bytes:
        url = self._urls.get(item.id)
        if url is None:
            url = self._urls[item.id] = orjson.dumps(image_data_url(item))
        return url

    def parts(self, item: SuiteItem, seed: int | None) -> tuple[bytes, bytes, bytes]:
        """The body as (before the image, the image's JSON string, after it): the client joins them
        with its HTTP head in one copy, and the image's bytes are shared by every body of the item."""
        key = (item.id, seed)
        parts = self._bodies.get(key)
        if parts is None:
            small = encode_body(build_request(item, self.model, self.sampling, self.max_tokens, seed, self._marker))
            head, tail = small.split(self._marker_json, 1)
            parts = self._bodies[key] = (head, self.data_url_json(item), tail)
        return parts

    def body(self, item: SuiteItem, seed: int | None) -> bytes:
        return b"".join(self.parts(item, seed))

    def forget(self, item: SuiteItem, seed: int | None) -> None:
        self._bodies.pop((item.id, seed), None)


# Failures worth retrying: server-side or network trouble, or a server asking to come back later (429).
TRANSIENT_STATUSES = ("http_5xx", "http_429", "timeout", "connection", "protocol")


@dataclass(frozen=True)
class StreamResult:
    """What came back for one request, timed on the monotonic clock."""

    start_ns: int
    end_ns: int
    first_token_ns: int | None
    token_times_ns: tuple[int, ...]  # arrival of every chunk that carried text (answer or reasoning)
    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str | None
    model: str | None
    status: str = "ok"
    http_status: int | None = None
    error: str | None = None
    cached_tokens: int | None = None
    reasoning_text: str = ""
    reasoning_tokens: int | None = None
    anomaly: str | None = None  # what was odd in what the server sent; the answer is kept as it came
    retry_after_s: float | None = None  # the server's Retry-After, when it sent one

    @property
    def transient(self) -> bool:
        return self.status in TRANSIENT_STATUSES

    def itl_stats(self) -> dict[str, float | None]:
        """Per-request gap statistics. Plain Python: numpy costs more than the math for ~100 gaps."""
        t = self.token_times_ns
        if len(t) < 2:
            return {"itl_mean_s": None, "itl_p50_s": None, "itl_p90_s": None, "itl_max_s": None}
        gaps = sorted((b - a) / 1e9 for a, b in zip(t, t[1:], strict=False))
        return {"itl_mean_s": sum(gaps) / len(gaps), "itl_p50_s": _percentile(gaps, 50),
                "itl_p90_s": _percentile(gaps, 90), "itl_max_s": gaps[-1]}


def _percentile(ordered: list[float], q: float) -> float:
    """numpy.percentile's default (linear) of a sorted list."""
    pos = q / 100 * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def retry_delay_s(result: StreamResult, attempt: int) -> float:
    """How long to wait before attempt `attempt + 1`: the server's Retry-After (bounded) when it
    sent one, else exponential backoff."""
    backoff = RETRY_BACKOFF_S * 2 ** (attempt - 1)
    if result.retry_after_s is not None:
        return min(max(result.retry_after_s, 0.0), RETRY_AFTER_MAX_S)
    return min(backoff, RETRY_AFTER_MAX_S)


def status_kind(http_status: int) -> str:
    if http_status == 429:
        return "http_429"
    return "http_5xx" if http_status >= 500 else "http_4xx"


def parse_retry_after(value: str | None, now_s: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now_s is None else now_s))


# --- the answer as it streams in --------------------------------------------------------------------

_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _safe_text(value: str) -> tuple[str, bool]:
    """Text that UTF-8 can store: lone surrogates (valid JSON escapes, invalid Unicode) become U+FFFD."""
    if _SURROGATE.search(value) is None:
        return value, False
    return _SURROGATE.sub("\ufffd", value), True


def _as_count(usage: dict, key: str, anomalies: list[str], where: str = "usage") -> int | None:
    value = usage.get(key)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    anomalies.append(f"{where}.{key} is not a count: {json.dumps(value, ensure_ascii=True)[:60]}")
    return None


@dataclass
class _Answer:
    """Mutable accumulation of one streamed answer; turned into a frozen StreamResult at the end."""

    first_ns: int | None = None
    times: list[int] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    usage: dict | None = None
    finish: str | None = None
    model: str | None = None
    done: bool = False  # saw `data: [DONE]`
    anomalies: list[str] = field(default_factory=list)

    def add_text(self, value, into: list[str], name: str) -> bool:
        if not isinstance(value, str):
            if value is None or value == "":
                return False
            self.anomalies.append(f"non-string {name} ({type(value).__name__}) kept as JSON text")
            value = json.dumps(value, ensure_ascii=False)
        if not value:
            return False
        into.append(value)
        return True

    def event(self, payload: bytes, now: int) -> None:
        """One `data:` payload (without the prefix)."""
        if payload == b"[DONE]":
            self.done = True
            return
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            # orjson refuses lone surrogates and invalid UTF-8; the standard parser keeps them (as
            # surrogate escapes), and _safe_text makes them storable with the anomaly noted.
            try:
                chunk = json.loads(payload.decode("utf-8", "surrogateescape"))
            except ValueError as exc:
                raise _StreamBroken("protocol", f"malformed JSON in the stream: {exc}") from None
        if not isinstance(chunk, dict):
            raise _StreamBroken("protocol", f"a stream event is not a JSON object: {payload[:80]!r}")
        if "error" in chunk and not chunk.get("choices"):
            err = chunk["error"] if isinstance(chunk["error"], dict) else {"message": chunk["error"]}
            code = err.get("code") if isinstance(err.get("code"), int) else None
            kind = status_kind(code) if code else "protocol"
            raise _StreamBroken(kind, f"error in the stream: {str(err.get('message'))[:300]}", code)
        model = chunk.get("model")
        if isinstance(model, str):
            self.model = model
        usage = chunk.get("usage")
        if usage is not None:
            self.usage = usage
        choices = chunk.get("choices")
        if not choices:
            return
        if not isinstance(choices, list):
            self.anomalies.append("choices is not a list")
            return
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                content = delta.get("content")
                if content.__class__ is str:  # the usual case, without a call
                    got = bool(content)
                    if got:
                        self.parts.append(content)
                else:
                    got = self.add_text(content, self.parts, "content")
                reasoning = delta.get("reasoning_content")
                if reasoning is None:
                    reasoning = delta.get("reasoning")
                if reasoning is not None:
                    got = self.add_text(reasoning, self.reasoning, "reasoning") or got
                if got:
                    self.times.append(now)
                    if self.first_ns is None:
                        self.first_ns = now
            finish = choice.get("finish_reason")
            if finish:
                self.finish = finish if isinstance(finish, str) else str(finish)

    def result(self, start_ns: int, end_ns: int, status: str = "ok", http_status: int | None = None,
               error: str | None = None, retry_after_s: float | None = None) -> StreamResult:
        anomalies = list(self.anomalies)
        text, bad = _safe_text("".join(self.parts))
        reasoning, bad_r = _safe_text("".join(self.reasoning))
        if bad or bad_r:
            anomalies.append("lone surrogate in the streamed text, stored as U+FFFD")
        prompt = completion = cached = reasoning_tokens = None
        usage = self.usage
        if status == "ok" and usage is None:
            anomalies.append("the stream ended without a usage report")
        elif usage is not None and not isinstance(usage, dict):
            anomalies.append(f"usage is not an object: {str(usage)[:60]}")
        elif usage is not None:
            prompt = _as_count(usage, "prompt_tokens", anomalies)
            completion = _as_count(usage, "completion_tokens", anomalies)
            details = usage.get("prompt_tokens_details")
            if isinstance(details, dict):
                cached = _as_count(details, "cached_tokens", anomalies, "usage.prompt_tokens_details")
            details = usage.get("completion_tokens_details")
            if isinstance(details, dict):
                reasoning_tokens = _as_count(details, "reasoning_tokens", anomalies,
                                             "usage.completion_tokens_details")
        model = _safe_text(self.model)[0] if self.model is not None else None
        return StreamResult(start_ns, end_ns, self.first_ns, tuple(self.times), text, prompt, completion,
                            self.finish, model, status, http_status, error, cached, reasoning, reasoning_tokens,
                            "; ".join(anomalies)[:1000] or None, retry_after_s)


class _StreamBroken(Exception):
    def __init__(self, status: str, message: str, http_status: int | None = None):
        super().__init__(message)
        self.status, self.http_status = status, http_status


# --- HTTP/1.1 on an asyncio protocol ----------------------------------------------------------------

class _Connection(asyncio.Protocol):
    """One keep-alive connection; parses one response at a time, straight from `data_received`."""

    def __init__(self):
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.exchange: _Exchange | None = None
        self.tunnel: asyncio.Future | None = None  # a proxy's answer to CONNECT, while it is awaited
        self.tunnel_buf = b""

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()  # the arrival time of these bytes, taken before any parsing
        if self.exchange is not None:
            self.exchange.feed(data, now)
        elif self.tunnel is not None:
            self._tunnel_answer(data)

    def _tunnel_answer(self, data: bytes) -> None:
        self.tunnel_buf += data
        end = self.tunnel_buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.tunnel_buf) > 65536 and not self.tunnel.done():
                self.tunnel.set_exception(_StreamBroken("protocol", "the proxy's answer to CONNECT is over 64 KiB"))
            return
        line = self.tunnel_buf[:end].split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ", 2)
        code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
        if not self.tunnel.done():
            if code is not None and 200 <= code < 300:
                self.tunnel.set_result(None)
            else:
                self.tunnel.set_exception(_StreamBroken(status_kind(code) if code else "protocol",
                                                        f"the proxy refused the tunnel: {line[:120]}", code))

    def eof_received(self):
        self.closed = True
        if self.exchange is not None:
            self.exchange.eof(None)
        self._tunnel_lost()
        return False

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.exchange is not None:
            self.exchange.eof(exc)
        self._tunnel_lost()

    def _tunnel_lost(self) -> None:
        if self.tunnel is not None and not self.tunnel.done():
            self.tunnel.set_exception(_StreamBroken("connection", "the proxy closed the connection during CONNECT"))

    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _chunk_size(line: bytes) -> int:
    try:
        size = int(line, 16)
    except ValueError:
        try:
            size = int(line.split(b";", 1)[0], 16)  # a chunk extension
        except ValueError:
            raise _StreamBroken("protocol", f"bad chunk size {line[:20]!r}") from None
    if size < 0:
        raise _StreamBroken("protocol", f"bad chunk size {line[:20]!r}")
    return size


class _Exchange:
    """One request/response on a connection: status line, headers, body framing, SSE events."""

    def __init__(self, conn: _Connection, answer: _Answer, done: asyncio.Future, gap_s: float):
        self.conn, self.answer, self.future = conn, answer, done
        self.buf = b""  # raw bytes not yet parsed (headers, or chunk framing)
        self.sse = b""  # decoded body bytes not yet split into events
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.chunked = False
        self.remaining: int | None = None  # Content-Length left, or the current chunk's bytes left
        self.keep_alive = True
        self.error_body = b""
        self.last_event_ns = time.monotonic_ns()  # progress clock for the gap timeout (data events only)
        self.got_bytes = False
        self.gap_ns = int(gap_s * 1e9)
        self.end_ns: int | None = None
        self.complete = False

    # - framing -
    def feed(self, data: bytes, now: int) -> None:
        if self.future.done():
            return
        self.got_bytes = True
        try:
            if self.status is None:
                self.buf += data
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buf) > 65536:
                        raise _StreamBroken("protocol", "response headers over 64 KiB")
                    return
                self._headers(self.buf[:end].decode("latin-1"))
                data, self.buf = self.buf[end + 4:], b""
            if self.chunked:
                self._chunks(data, now)
            else:
                self._body(data, now)
        except _StreamBroken as exc:
            self.fail(exc)

    def _headers(self, head: str) -> None:
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise _StreamBroken("protocol", f"not an HTTP response: {lines[0][:80]!r}")
        self.status = int(parts[1])
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self.chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        if not self.chunked and "content-length" in self.headers:
            try:
                self.remaining = int(self.headers["content-length"])
            except ValueError:
                raise _StreamBroken("protocol", "unreadable Content-Length") from None
        connection = self.headers.get("connection", "").lower()
        self.keep_alive = parts[0] != "HTTP/1.0" and "close" not in connection
        if self.remaining is None and not self.chunked:
            self.keep_alive = False  # the body ends when the server closes
        if not self.chunked and self.remaining == 0:
            self._finish(time.monotonic_ns())

    def _body(self, data: bytes, now: int) -> None:
        if self.remaining is not None:
            data = data[:self.remaining]
            self.remaining -= len(data)
        self._content(data, now)
        if self.remaining == 0:
            self._finish(now)

    def _chunks(self, data: bytes, now: int) -> None:
        """Chunked transfer coding. A chunk that arrived whole (size line, data, CRLF) is taken in one
        step; one split across reads goes through `remaining` (its data bytes still to come, 0 when
        only its CRLF is missing)."""
        buf = self.buf + data if self.buf else data
        self.buf = b""
        pos, out, n = 0, [], len(buf)
        while pos < n:
            remaining = self.remaining
            if remaining:  # inside a chunk's data
                take = buf[pos:pos + remaining]
                out.append(take)
                pos += len(take)
                self.remaining = remaining - len(take)
                continue
            end = buf.find(b"\r\n", pos)
            if end < 0:
                self.buf = buf[pos:]
                break
            if remaining == 0:  # the CRLF after a chunk's data
                if end != pos:
                    raise _StreamBroken("protocol", "bad chunk framing")
                self.remaining = None
                pos = end + 2
                continue
            size = _chunk_size(buf[pos:end])
            pos = end + 2
            if size == 0:  # last chunk (trailers, if any, are ignored)
                self._content(b"".join(out), now)
                self._finish(now)
                return
            stop = pos + size
            if buf[stop:stop + 2] == b"\r\n":  # the whole chunk is here
                out.append(buf[pos:stop])
                pos = stop + 2
            else:
                self.remaining = size
        self._content(b"".join(out), now)

    # - content -
    def _content(self, data: bytes, now: int) -> None:
        if not data:
            return
        if self.status != 200:
            self.error_body += data[:4096 - len(self.error_body)]
            return
        sse = self.sse + data if self.sse else data
        if b"\r" in sse:
            sse = sse.replace(b"\r\n", b"\n")
        blocks = sse.split(b"\n\n")
        self.sse = blocks.pop()  # an event not yet complete
        answer = self.answer
        for block in blocks:
            if block[:6] == b"data: " and b"\n" not in block:  # the usual event: one data line
                self.last_event_ns = now
                answer.event(block[6:], now)
                continue
            for line in block.split(b"\n"):
                if line.startswith(b"data:"):
                    payload = line[5:]
                    if payload[:1] == b" ":
                        payload = payload[1:]
                    self.last_event_ns = now
                    answer.event(payload, now)
                # comments (": keep-alive"), event:, id:, retry: lines carry no answer and do not count as progress

    def _finish(self, now: int) -> None:
        self.complete = True
        self.end_ns = now
        if self.sse.strip():
            self._content(b"\n\n", now)  # a last event without its blank line
        if not self.future.done():
            self.future.set_result(None)

    def eof(self, exc: Exception | None) -> None:
        if self.future.done():
            return
        self.keep_alive = False
        if exc is None and self.status is not None and self.remaining is None and not self.chunked:
            self._finish(time.monotonic_ns())  # a body delimited by the connection's end
            return
        what = f"the connection closed mid-response ({exc})" if exc else "the server closed the connection"
        self.fail(_StreamBroken("connection", what))

    def fail(self, exc: BaseException) -> None:
        self.keep_alive = False
        if not self.future.done():
            self.future.set_exception(exc)


@dataclass(frozen=True)
class _Endpoint:
    host: str
    port: int
    ssl: bool
    path: str  # of /chat/completions
    host_header: str
    proxy: ProxyRoute | None = None

    @property
    def target(self) -> str:
        """The request line's target: the path, or the absolute URL for a plain-http proxy."""
        if self.proxy is not None and not self.ssl:
            return f"http://{self.host_header}{self.path}"
        return self.path


def _endpoint(base_url: str, environ: Mapping[str, str] | None = None) -> _Endpoint:
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {base_url}")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    default_port = (tls and port == 443) or (not tls and port == 80)
    return _Endpoint(host, port, tls, parts.path.rstrip("/") + "/chat/completions",
                     shown if default_port else f"{shown}:{port}", proxy_route(parts.scheme, host, port, environ))


class ChatClient:
    """Streams chat completions from one OpenAI-compatible server. Never raises for a failed
    request: every failure becomes a StreamResult with its kind (the run loop decides what next)."""

    def __init__(self, base_url: str, api_key: str | None = None, environ: Mapping[str, str] | None = None):
        """`environ`: where proxy variables are read [default: os.environ]."""
        self.endpoint = ep = _endpoint(base_url, environ)
        head = (f"POST {ep.target} HTTP/1.1\r\nHost: {ep.host_header}\r\n"
                f"User-Agent: {USER_AGENT}\r\nAccept: text/event-stream\r\nContent-Type: application/json\r\n")
        if api_key:
            head += f"Authorization: Bearer {api_key}\r\n"
        if ep.proxy is not None and ep.proxy.authorization and not ep.ssl:
            head += f"Proxy-Authorization: {ep.proxy.authorization}\r\n"
        self._head = head.encode("latin-1")
        self._idle: list[_Connection] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle = []

    def _pool(self) -> list[_Connection]:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop: the old loop's connections cannot be used here
            for conn in self._idle:
                if not conn.closed and conn.transport is not None and self._loop is not None \
                        and not self._loop.is_closed():
                    conn.close()
            self._idle, self._loop = [], loop
        return self._idle

    async def open(self, n: int, timeout_s: float) -> int:
        """Pool `n` open connections before a measured phase, so that no timed request waits for a
        connect (its start would then include whatever else the event loop ran meanwhile: at 16 in
        flight the first wave's start stamps came 13 ms before their bytes reached the server).
        Returns how many are pooled; a connection that fails is left to the requests to report."""
        pool = self._pool()
        missing = max(0, n - sum(1 for conn in pool if conn.usable()))
        opened = await asyncio.gather(*(self._connect(min(timeout_s, CONNECT_TIMEOUT_MAX_S)) for _ in range(missing)),
                                      return_exceptions=True)
        pool.extend(conn for conn in opened if isinstance(conn, _Connection))
        return len(pool)

    async def _connect(self, timeout_s: float) -> _Connection:
        return await asyncio.wait_for(self._open(), timeout=timeout_s)

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        ep = self.endpoint
        context = None
        if ep.ssl:
            import ssl

            context = ssl.create_default_context()
        if ep.proxy is None:
            _, conn = await loop.create_connection(_Connection, ep.host, ep.port, ssl=context)
            return conn
        _, conn = await loop.create_connection(_Connection, ep.proxy.host, ep.proxy.port)
        if not ep.ssl:  # plain http: requests go to the proxy in absolute form
            return conn
        try:  # https: a CONNECT tunnel through the proxy, then TLS with the target inside it
            authority = f"[{ep.host}]:{ep.port}" if ":" in ep.host else f"{ep.host}:{ep.port}"
            auth = f"Proxy-Authorization: {ep.proxy.authorization}\r\n" if ep.proxy.authorization else ""
            conn.tunnel = loop.create_future()
            conn.transport.write(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{auth}\r\n".encode("latin-1"))
            await conn.tunnel
            conn.tunnel = None
            conn.transport = await loop.start_tls(conn.transport, conn, context, server_hostname=ep.host)
        except BaseException:
            conn.close()
            raise
        return conn

    async def stream(self, body: bytes | Sequence[bytes], timeout_s: float, gap_s: float | None = None
                     ) -> StreamResult:
        """Send one request (`body`: its bytes, or parts of them: `RequestBuilder.parts`); `timeout_s`
        bounds the whole request (connect, first byte, total), `gap_s` (default `timeout_s`) the time
        between two stream events (comments do not count)."""
        parts = (body,) if isinstance(body, bytes) else tuple(body)
        # Head and body joined in one copy, before the clock starts.
        payload = b"".join((self._head, b"Content-Length: %d\r\n\r\n" % sum(map(len, parts)), *parts))
        start = time.monotonic_ns()
        answer = _Answer()
        deadline = start + int(timeout_s * 1e9)
        gap = timeout_s if gap_s is None else gap_s
        pool = self._pool()
        loop = asyncio.get_running_loop()
        exchange: _Exchange | None = None
        try:
            while True:  # at most one retry, on a pooled connection the server had closed before answering
                reused = bool(pool)
                conn = pool.pop() if pool else None
                if conn is not None and not conn.usable():
                    continue
                if conn is None:
                    left = (deadline - time.monotonic_ns()) / 1e9
                    conn = await self._connect(max(0.0, min(left, CONNECT_TIMEOUT_MAX_S)))
                done = loop.create_future()
                exchange = _Exchange(conn, answer, done, gap)
                conn.exchange = exchange
                conn.transport.write(payload)
                timer = _Watchdog(loop, exchange, deadline, timeout_s, gap)
                try:
                    await done
                except _StreamBroken as exc:
                    if reused and exc.status == "connection" and not exchange.got_bytes:
                        conn.close()
                        answer = _Answer()
                        continue
                    raise
                finally:
                    timer.cancel()
                break
            end = exchange.end_ns or time.monotonic_ns()
            status = exchange.status
            if exchange.keep_alive and exchange.complete:
                conn.exchange = None
                pool.append(conn)
            else:
                conn.close()
            if status != 200:
                retry_after = parse_retry_after(exchange.headers.get("retry-after"))
                message = exchange.error_body.decode("utf-8", "replace").strip()
                return answer.result(start, end, status_kind(status), status, f"HTTP {status}: {message}"[:500],
                                     retry_after)
            if not answer.done and answer.finish is None:
                return answer.result(start, end, "connection", None,
                                     "the stream ended before its finish reason or [DONE]")
            return answer.result(start, end)
        except _StreamBroken as exc:
            if exchange is not None:
                exchange.conn.close()
            return answer.result(start, time.monotonic_ns(), exc.status, exc.http_status, str(exc)[:500])
        except TimeoutError:
            return answer.result(start, time.monotonic_ns(), "timeout", None,
                                 f"no connection within {min(timeout_s, CONNECT_TIMEOUT_MAX_S):g} s")
        except OSError as exc:
            return answer.result(start, time.monotonic_ns(), "connection", None, f"{type(exc).__name__}: {exc}"[:500])
        except asyncio.CancelledError:
            if exchange is not None:
                exchange.conn.close()
            raise


class _Watchdog:
    """One timer per request: fires at the earlier of the total deadline and the last event + gap,
    and re-arms itself when events arrived since (so a token costs no timer work)."""

    def __init__(self, loop, exchange: _Exchange, deadline_ns: int, timeout_s: float, gap_s: float):
        self.loop, self.exchange, self.deadline_ns = loop, exchange, deadline_ns
        self.timeout_s, self.gap_s = timeout_s, gap_s
        self.handle = None
        self._arm()

    def _next_ns(self) -> int:
        return min(self.deadline_ns, self.exchange.last_event_ns + self.exchange.gap_ns)

    def _arm(self) -> None:
        delay = (self._next_ns() - time.monotonic_ns()) / 1e9
        self.handle = self.loop.call_later(max(delay, 0.0), self._fire)

    def _fire(self) -> None:
        now = time.monotonic_ns()
        ex = self.exchange
        if ex.future.done():
            return
        if now >= ex.last_event_ns + ex.gap_ns:
            what = "the first event" if ex.answer.first_ns is None and not ex.answer.usage else "the next event"
            message = f"no data for {self.gap_s:g} s waiting for {what} (keep-alive comments do not count)"
        elif now >= self.deadline_ns:
            message = f"the request took longer than {self.timeout_s:g} s in total"
        else:
            self._arm()
            return
        ex.conn.close()
        ex.fail(_StreamBroken("timeout", message))

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()


async def stream_chat(client: ChatClient, request: dict | bytes, timeout_s: float) -> StreamResult:
    """Send one streaming request (a body from `build_request`, or its bytes); never raises for a failed request."""
    body = request if isinstance(request, bytes) else encode_body(request)
    return await client.stream(body, timeout_s)
