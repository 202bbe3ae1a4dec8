"""A small OpenAI-compatible chat server for tests, fault injection and the soak benchmark.

    python -m harness.mock_server [--port 0] [--ttft-ms 20] [--itl-ms 2] [--tokens 8] [--fault-rate 0]

Streams SSE like vLLM (`/v1/chat/completions` with `stream_options.include_usage`), serves
`/health`, `/v1/models`, `/version`. Behaviour can be changed while it runs with
`POST /_control {"mode": ..., "crash_after": N, ...}`; `GET /_requests` returns the bodies it received (image
data URLs shortened), so tests check what the harness *sent*, not what a server defaulted to.

Modes: normal | error_500 | crash (exits the process on the next request) | hang (accepts,
never answers) | reset (closes the connection mid-stream) | garbage (malformed SSE) |
wrong_model | slow (ttft x 20) | unavailable (`unavailable_status`, default 429, with `Retry-After:
retry_after`) | keepalive_only (headers, then only `: keep-alive` comments) | endless (tokens forever).
`mode_times: N` returns to normal after N requests in the mode. `fault_rate` injects error_500/reset/garbage at random.

Payload options (also via /_control): `odd` = surrogate | non_string | bad_usage | no_usage sends an
answer the way a broken server might; `reasoning_tokens` N streams the first N words as reasoning deltas
(field `reasoning_field`, default `reasoning_content`) and reports them in usage; `cached_tokens` N reports
N prompt tokens from the prefix cache; `--keep-alive` answers with chunked transfer encoding on a
persistent connection (as vLLM/uvicorn do) instead of closing it.

Measurement-protocol behaviour (harness.protocol), like vLLM's: `prefix_cache: true` reports, for a
request whose messages were seen before, all but the last 4 of its 100 prompt tokens as cached
(`prompt_tokens_details.cached_tokens`; 0 for a first-seen one); `dev_mode: true` serves POST
/reset_prefix_cache, /reset_mm_cache and /reset_encoder_cache (vLLM with VLLM_SERVER_DEV_MODE=1),
which forget what was seen; `cold_requests: N` with `cold_ttft_ms: T` makes the next N requests wait
T ms for their first token (a fresh server compiling kernels).

Gemma-like answers (mode `gemma`): `POST /_control {"mode": "gemma", "script": [{"match": "text in
the prompt", "content": "...", "reasoning": "...", "finish": "stop"|"length"}]}` answers each request
with the first entry whose `match` occurs in its text: reasoning streamed as `reasoning` deltas
(vLLM ≥ 0.10; `"field": "reasoning_content"` for older servers) then `content` word by word as is
(thought blocks, markdown and sentences included), usage with reasoning_tokens."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODES = ("normal", "error_500", "crash", "hang", "reset", "garbage", "wrong_model", "slow", "unavailable",
         "keepalive_only", "endless", "gemma")
ODD_PAYLOADS = (None, "surrogate", "non_string", "bad_usage", "no_usage", "mixed")  # mixed: each in turn
# Settable with POST /_control besides `mode` (payload and timing options; see the module docstring).
OPTIONS = ("fault_rate", "tokens", "crash_after", "mode_times", "unavailable_status", "retry_after", "odd",
           "reasoning_tokens", "reasoning_field", "cached_tokens", "itl_ms", "script", "prefix_cache", "dev_mode",
           "cold_requests", "cold_ttft_ms")
PREFIX_CACHE_MISS_TOKENS = 4  # a repeated prompt: all but its last tokens come from the cache (as in vLLM)


class State:
    def __init__(self, args: argparse.Namespace):
        self.model = args.model
        self.ttft_s, self.itl_s, self.tokens = args.ttft_ms / 1000, args.itl_ms / 1000, args.tokens
        self.mode, self.fault_rate = "normal", args.fault_rate
        self.answer = args.answer
        self.crash_after: int | None = None  # exit the process once this many chat requests came in
        self.rng = random.Random(args.seed)
        self.lock = threading.Lock()
        self.bodies: list[dict] = []
        self.keep_alive = args.keep_alive
        self.mode_times: int | None = None
        self.unavailable_status, self.retry_after = 429, "1"
        self.odd: str | None = None
        self.reasoning_tokens, self.reasoning_field, self.cached_tokens = 0, "reasoning_content", None
        self.script: list[dict] = []  # gemma mode: scripted answers
        self.prefix_cache, self.dev_mode, self.seen = False, False, set()  # protocol: simulated prefix cache
        self.cold_requests, self.cold_ttft_ms = 0, 0.0

    def cached_for(self, body: dict) -> int | None:
        """Prompt tokens served from the simulated prefix cache (None: not simulated)."""
        if not self.prefix_cache:
            return self.cached_tokens
        key = hashlib.sha256(json.dumps(body.get("messages"), sort_keys=True).encode()).hexdigest()
        with self.lock:
            hit = key in self.seen
            self.seen.add(key)
        return 100 - PREFIX_CACHE_MISS_TOKENS if hit else 0

    def cold_wait_s(self) -> float:
        with self.lock:
            if self.cold_requests <= 0:
                return 0.0
            self.cold_requests -= 1
            return self.cold_ttft_ms / 1000

    def record(self, body: dict) -> None:
        shown = json.loads(json.dumps(body))
        for message in shown.get("messages", []):
            for part in message.get("content", []) if isinstance(message.get("content"), list) else []:
                url = part.get("image_url", {}).get("url", "")
                if url:
                    part["image_url"]["url"] = f"{url[:40]}...({len(url)} chars)"
        with self.lock:
            self.bodies.append(shown)

    def pick_mode(self) -> str:
        with self.lock:
            if self.crash_after is not None and len(self.bodies) > self.crash_after:
                return "crash"
            if self.mode == "normal" and self.fault_rate and self.rng.random() < self.fault_rate:
                return self.rng.choice(("error_500", "reset", "garbage"))
            mode = self.mode
            if mode != "normal" and self.mode_times is not None:
                self.mode_times -= 1
                if self.mode_times <= 0:
                    self.mode, self.mode_times = "normal", None
            return mode

    def update(self, update: dict) -> str | None:
        """Apply a /_control body; returns an error message for a bad one."""
        if update.get("mode") not in (None, *MODES):
            return f"unknown mode {update.get('mode')}"
        if update.get("odd") not in ODD_PAYLOADS:
            return f"unknown odd payload {update.get('odd')}"
        unknown = set(update) - {"mode", "ttft_ms", *OPTIONS}
        if unknown:
            return f"unknown option(s) {sorted(unknown)}"
        with self.lock:
            self.mode = update.get("mode", self.mode)
            self.ttft_s = update.get("ttft_ms", self.ttft_s * 1000) / 1000
            self.itl_s = update.get("itl_ms", self.itl_s * 1000) / 1000
            for key in OPTIONS:
                if key in update and key != "itl_ms":
                    setattr(self, key, update[key])
        return None


def make_handler(state: State):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet: tests read stdout for the port line only
            pass

        def _json(self, code: int, payload) -> None:
            body = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._json(200, {})
            elif self.path == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": state.model, "object": "model"}]})
            elif self.path == "/version":
                self._json(200, {"version": "mock-1.0"})
            elif self.path == "/_requests":
                with state.lock:
                    self._json(200, state.bodies)
            else:
                self._json(404, {"error": "not found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            raw = self.rfile.read(length)
            if self.path == "/_control":
                problem = state.update(json.loads(raw or b"{}"))
                if problem:
                    return self._json(400, {"error": problem})
                return self._json(200, {"mode": state.mode})
            if state.dev_mode and self.path.split("?")[0] in ("/reset_prefix_cache", "/reset_mm_cache",
                                                              "/reset_encoder_cache"):
                with state.lock:
                    state.seen.clear()
                return self._json(200, {"success": True})
            if self.path != "/v1/chat/completions":
                return self._json(404, {"error": "not found"})
            try:
                body = json.loads(raw)
            except json.JSONDecodeError:
                return self._json(400, {"error": "invalid JSON"})
            state.record(body)
            mode = state.pick_mode()
            if mode == "crash":
                os._exit(3)
            if mode == "hang":
                time.sleep(3600)
                return None
            if mode == "error_500":
                return self._json(500, {"error": {"message": "injected failure", "type": "server_error"}})
            if mode == "unavailable":
                return self._unavailable()
            if body.get("model") != state.model:
                return self._json(404, {"error": {"message": f"model {body.get('model')} not found"}})
            if mode == "keepalive_only":
                return self._keepalive_only()
            if state.keep_alive:
                return self._stream_chunked(body, mode)
            self._stream(body, mode)
            return None

        # -- behaviours added for the client's fault and timing tests (kept apart from the base stream) --
        def _unavailable(self) -> None:
            body = json.dumps({"error": {"message": "try again later", "type": "rate_limited"}}).encode()
            self.send_response(state.unavailable_status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Retry-After", str(state.retry_after))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _keepalive_only(self) -> None:
            """A stream that never sends an event, only SSE comments (a stuck server behind a proxy)."""
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            with contextlib.suppress(OSError):
                for _ in range(3000):
                    self.wfile.write(b": keep-alive\n\n")
                    self.wfile.flush()
                    time.sleep(0.1)

        def _stream_chunked(self, body: dict, mode: str) -> None:
            """The same answer as `_stream`, framed like vLLM's uvicorn: chunked, connection kept open."""
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

            def write(data: bytes) -> None:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            if self._play(body, mode, write):
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

        def _play(self, body: dict, mode: str, write) -> bool:
            """Send the answer's events through `write`, sleeping its pauses; False if it reset the connection."""
            for event in answer_events(state, body, mode):
                if isinstance(event, float):
                    time.sleep(event)
                elif event is RESET:
                    self._reset()
                    return False
                else:
                    write(event)
            return True

        def _reset(self) -> None:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.connection.close()
            self.close_connection = True

        def _stream(self, body: dict, mode: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()

            def write(data: bytes) -> None:
                self.wfile.write(data)
                self.wfile.flush()

            self._play(body, mode, write)

    return Handler


RESET = object()  # answer_events: reset the connection here


def answer_events(state: State, body: dict, mode: str):
    """The streamed answer as SSE event bytes, with float pauses (seconds) between them."""
    n = min(int(body.get("max_tokens") or state.tokens), state.tokens)
    model = "some-other-model" if mode == "wrong_model" else state.model
    created, rid = int(time.time()), f"chatcmpl-{random.getrandbits(32):08x}"

    def event(payload) -> bytes:
        return f"data: {json.dumps(payload)}\n\n".encode()

    def chunk(delta: dict, finish=None) -> bytes:
        return event({"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                      "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    cached = state.cached_for(body)
    yield state.ttft_s * (20 if mode == "slow" else 1) + state.cold_wait_s()
    yield chunk({"role": "assistant", "content": ""})
    if mode == "gemma":
        yield from gemma_events(state, body, chunk, event)
        yield b"data: [DONE]\n\n"
        return
    if mode == "endless":
        while True:
            yield chunk({"content": " token"})
            yield max(state.itl_s, 0.01)
    odd = state.odd
    if odd == "mixed":
        with state.lock:
            odd = ODD_PAYLOADS[1 + (len(state.bodies) - 1) % 4]
    words = (state.answer or "token " * n).split()[:n] or ["token"]
    n_reasoning = min(state.reasoning_tokens or 0, len(words))
    for i, word in enumerate(words):
        if i:
            yield state.itl_s
        if mode == "reset" and i == len(words) // 2:
            yield RESET
            return
        if mode == "garbage" and i == len(words) // 2:
            yield b"data: {this is not json\n\n"
            return
        text = ("" if i in (0, n_reasoning) else " ") + word
        if i < n_reasoning:
            yield chunk({state.reasoning_field: text})
        else:
            yield odd_delta(odd, text, i) if odd in ("surrogate", "non_string") else chunk({"content": text})
    yield chunk({}, "length" if len(words) >= n else "stop")
    if (body.get("stream_options") or {}).get("include_usage") and odd != "no_usage":
        usage: dict = {"prompt_tokens": 100, "completion_tokens": len(words), "total_tokens": 100 + len(words)}
        if cached is not None:
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
        if n_reasoning:
            usage["completion_tokens_details"] = {"reasoning_tokens": n_reasoning}
        if odd == "bad_usage":
            usage.update(prompt_tokens="100", completion_tokens=2.5)
        yield event({"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                     "choices": [], "usage": usage})
    yield b"data: [DONE]\n\n"


def odd_delta(odd: str, text: str, i: int) -> bytes:
    """A content delta as a broken server might send it: a lone surrogate escape, or a non-string value."""
    if odd == "surrogate" and i == 0:
        return b'data: {"model": "mock", "choices": [{"index": 0, "delta": {"content": "\\ud83d"}}]}\n\n'
    if odd == "non_string" and i == 0:
        return b'data: {"model": "mock", "choices": [{"index": 0, "delta": {"content": 42}}]}\n\n'
    return f"data: {json.dumps({'model': 'mock', 'choices': [{'index': 0, 'delta': {'content': text}}]})}\n\n".encode()


# --- gemma-like answers (mode "gemma"): scripted like Gemma 4 answers through vLLM ----------------------
def gemma_events(state: State, body: dict, chunk, event):
    """The scripted entry whose `match` occurs in the request's text: reasoning deltas, then the
    content word by word as written (thought blocks, markdown, sentences), the finish reason, and
    usage with reasoning_tokens. Yields what `chunk`/`event` make of each payload, and float pauses."""
    text = "\n".join(m["content"] if isinstance(m.get("content"), str) else
                     "\n".join(part.get("text", "") for part in m.get("content") or [] if isinstance(part, dict))
                     for m in body.get("messages", []) if isinstance(m, dict))
    entry = next((e for e in state.script if e.get("match", "") in text), {"content": state.answer or ""})
    reasoning = entry["reasoning"].split(" ") if entry.get("reasoning") else []
    content = entry["content"].split(" ") if entry.get("content") else []
    for i, word in enumerate(reasoning):
        yield chunk({entry.get("field", "reasoning"): ("" if i == 0 else " ") + word})
    for i, word in enumerate(content):
        yield state.itl_s
        yield chunk({"content": ("" if i == 0 else " ") + word})
    yield chunk({}, entry.get("finish", "stop"))
    tokens = len(reasoning) + len(content)
    yield event({"id": "chatcmpl-gemma", "object": "chat.completion.chunk", "created": int(time.time()),
                 "model": state.model, "choices": [],
                 "usage": {"prompt_tokens": 100, "completion_tokens": tokens, "total_tokens": 100 + tokens,
                           "completion_tokens_details": {"reasoning_tokens": len(reasoning)}}})


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="OpenAI-compatible mock chat server")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--model", default="mock")
    ap.add_argument("--ttft-ms", type=float, default=20)
    ap.add_argument("--itl-ms", type=float, default=2)
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--fault-rate", type=float, default=0.0)
    ap.add_argument("--answer", default=None, help="answer text (default: 'token token ...')")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep-alive", action="store_true", help="chunked answers on persistent connections")
    args = ap.parse_args(argv)
    ThreadingHTTPServer.request_queue_size = 256  # a soak at concurrency 32 must not meet a full backlog
    server = ThreadingHTTPServer((args.host, args.port), make_handler(State(args)))
    server.daemon_threads = True
    print(f"listening on {server.server_address[1]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    sys.exit(0)


if __name__ == "__main__":
    main()
