#!/usr/bin/env python3
"""Soak: 10 000 requests through `bench run` against the mock server with 5 % injected faults
(HTTP 500, connection resets, malformed SSE), then account for every one of them.

    python benchmarks/soak.py [--samples 60] [--fault-rate 0.05] [--concurrency 32]

Prints requests sent (recorded attempts) / received by the server / retried / failed, and
exits non-zero unless every attempt is accounted for (received by the server, or a recorded
connection failure) and every (item, sample) has exactly one final record."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.store import read_requests  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=60, help="168 items x 60 = 10 080 requests")
    ap.add_argument("--fault-rate", type=float, default=0.05)
    ap.add_argument("--concurrency", type=int, default=32)
    a = ap.parse_args()
    server = subprocess.Popen([sys.executable, "-m", "harness.mock_server", "--port", "0", "--ttft-ms", "1",
                               "--itl-ms", "0", "--tokens", "4", "--fault-rate", str(a.fault_rate), "--seed", "7"],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    port = int(server.stdout.readline().split()[-1])
    try:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            result = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--base-url",
                                     f"http://127.0.0.1:{port}", "--samples", str(a.samples), "--concurrency",
                                     str(a.concurrency), "--results-dir", tmp, "--run-id", "soak", "--idle-s", "0",
                                     "--max-retries", "3"], cwd=ROOT, capture_output=True, text=True)
            elapsed = time.perf_counter() - t0
            if result.returncode != 0:
                print(result.stderr[-2000:])
                return 1
            sent = len(json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/_requests").read()))
            requests = read_requests(Path(tmp) / "soak")
    finally:
        server.kill()
    final = requests[~requests["retried"]]
    expected = 168 * a.samples
    ok = int((final["status"] == "ok").sum())
    # An attempt refused before the server read it is recorded (status "connection") but never
    # received; every other attempt must be both.
    unreceived = len(requests) - sent
    connection = int((requests["status"] == "connection").sum())
    print("| requests planned | sent (recorded attempts) | received by server | retried attempts | final ok "
          "| final failed | wall s | attempts/s |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {expected:,} | {len(requests):,} | {sent:,} | {int(requests['retried'].sum()):,} | {ok:,} "
          f"| {len(final) - ok:,} | {elapsed:.1f} | {len(requests) / elapsed:.0f} |")
    keys_unique = not final.duplicated(["item_id", "sample_index"]).any()
    accounted = 0 <= unreceived <= connection and len(final) == expected and keys_unique
    print("every request accounted for" if accounted else "MISMATCH")
    return 0 if accounted else 1


if __name__ == "__main__":
    sys.exit(main())
