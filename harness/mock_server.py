"""A small OpenAI-compatible chat server for tests, fault injection and the soak benchmark.

    python -m harness.mock_server [--port 0] [--ttft-ms 20] [--itl-ms 2] [--tokens 8] [--fault-rate 0]

Streams SSE like vLLM (`/v1/chat/completions` with `stream_options.include_usage`), serves
`/health`, `/v1/models`, `/version`. Behaviour can be changed while it runs with
`POST /_control {"mode": ..., "crash_after": N, ...}`; `GET /_requests` returns the bodies it received (image
data URLs shortened), so tests check what the harness *sent*, not what a server defaulted to.

Modes: normal | error_500 | crash (exits the process on the next request) | hang (accepts,
never answers) | reset (closes the connection mid-stream) | garbage (malformed SSE) |
wrong_model | slow (ttft x 20). `fault_rate` injects error_500/reset/garbage at random.

Gemma-like answers (mode `gemma`): `POST /_control {"mode": "gemma", "script": [{"match": "text in
the prompt", "content": "...", "reasoning": "...", "finish": "stop"|"length"}]}` answers each request
with the first entry whose `match` occurs in its text: reasoning streamed as `reasoning` deltas
(vLLM ≥ 0.10; `"field": "reasoning_content"` for older servers) then `content` word by word as is
(thought blocks, markdown and sentences included), usage with reasoning_tokens."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODES = ("normal", "error_500", "crash", "hang", "reset", "garbage", "wrong_model", "slow", "gemma")


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
        self.script: list[dict] = []  # gemma mode: scripted answers

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
            return self.mode


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
                update = json.loads(raw or b"{}")
                with state.lock:
                    if update.get("mode") not in (None, *MODES):
                        return self._json(400, {"error": f"unknown mode {update.get('mode')}"})
                    state.mode = update.get("mode", state.mode)
                    state.fault_rate = update.get("fault_rate", state.fault_rate)
                    state.ttft_s = update.get("ttft_ms", state.ttft_s * 1000) / 1000
                    state.tokens = update.get("tokens", state.tokens)
                    state.crash_after = update.get("crash_after", state.crash_after)
                    state.script = update.get("script", state.script)
                return self._json(200, {"mode": state.mode})
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
            if body.get("model") != state.model:
                return self._json(404, {"error": {"message": f"model {body.get('model')} not found"}})
            self._stream(body, mode)
            return None

        def _stream(self, body: dict, mode: str) -> None:
            n = min(int(body.get("max_tokens") or state.tokens), state.tokens)
            model = "some-other-model" if mode == "wrong_model" else state.model
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            created, rid = int(time.time()), f"chatcmpl-{random.getrandbits(32):08x}"

            def send(payload) -> None:
                self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
                self.wfile.flush()

            def chunk(delta: dict, finish=None) -> dict:
                return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

            time.sleep(state.ttft_s * (20 if mode == "slow" else 1))
            send(chunk({"role": "assistant", "content": ""}))
            if mode == "gemma":
                for item in gemma_events(state, body, chunk, lambda payload: payload):
                    if isinstance(item, float):
                        time.sleep(item)
                    else:
                        send(item)
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                return
            words = (state.answer or "token " * n).split()[:n] or ["token"]
            for i, word in enumerate(words):
                if i:
                    time.sleep(state.itl_s)
                if mode == "reset" and i == len(words) // 2:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    self.connection.close()
                    return
                if mode == "garbage" and i == len(words) // 2:
                    self.wfile.write(b"data: {this is not json\n\n")
                    self.wfile.flush()
                    return
                send(chunk({"content": ("" if i == 0 else " ") + word}))
            send(chunk({}, "length" if len(words) >= n else "stop"))
            if (body.get("stream_options") or {}).get("include_usage"):
                send({"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                      "choices": [], "usage": {"prompt_tokens": 100, "completion_tokens": len(words),
                                               "total_tokens": 100 + len(words)}})
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()

    return Handler


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
