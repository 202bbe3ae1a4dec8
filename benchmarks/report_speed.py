#!/usr/bin/env python3
"""How long `bench report` takes on a large run: a synthetic 100 000-request run folder
(32 in flight, a 100 Hz power trace over the whole window), rendered from its files.
Goal: ≤ 10 s on the 2-core CI machine.

    python benchmarks/report_speed.py [--requests 100000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from harness.finalize import finalize_run
from harness.records import MeterInfo, RequestRecord, RunStatus
from harness.report.render import run_report
from harness.results import Manifest, Segment, SuiteInfo, VariantInfo
from harness.store import RunStore, load_run, write_tables

TASKS = ["ocr", "chart", "counting", "colour", "document", "caption", "choice"]


def synthesize(run_dir: Path, n: int, concurrency: int = 32, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    run_dir.mkdir(parents=True)
    duration = rng.gamma(4.0, 0.25, n) + 0.2  # seconds, mean ~1.2 s
    lane_free = np.zeros(concurrency)
    start = np.empty(n)
    for i in range(n):  # each of `concurrency` lanes sends its next request when free
        lane = int(np.argmin(lane_free))
        start[i] = lane_free[lane] + rng.exponential(0.01)
        lane_free[lane] = start[i] + duration[i]
    t0 = 10_000_000_000
    start_ns = (t0 + start * 1e9).astype(np.int64)
    end_ns = start_ns + (duration * 1e9).astype(np.int64)
    first_ns = start_ns + (rng.uniform(0.05, 0.3, n) * 1e9).astype(np.int64)
    tokens = rng.integers(20, 129, n)
    frame = pd.DataFrame({
        "run_id": "synthetic", "item_id": [f"item-{i:06d}" for i in range(n)], "sample_index": 0, "attempt": 1,
        "task": [TASKS[i % 7] for i in range(n)], "metric": "exact_match", "seed": np.arange(n),
        "start_ns": start_ns, "end_ns": end_ns, "first_token_ns": first_ns, "start_wall_s": start_ns / 1e9,
        "end_wall_s": end_ns / 1e9, "ttft_s": (first_ns - start_ns) / 1e9, "e2e_s": duration,
        "itl_mean_s": 0.006, "itl_p50_s": 0.006, "itl_p90_s": 0.007, "itl_max_s": 0.02, "prompt_tokens": 300,
        "completion_tokens": tokens, "finish_reason": "length", "output_text": "an answer",
        "references": [["an answer"] if i % 3 else ["other"] for i in range(n)], "status": "ok",
        "http_status": None, "error": None, "image_converted_from": None,
    })
    fields = list(RequestRecord.__dataclass_fields__)
    assert list(frame.columns) == fields[:len(frame.columns)]  # newer optional fields are read back as None
    t = np.arange(t0 - 10_000_000_000, int(end_ns.max()) + 20_000_000, 10_000_000, dtype=np.int64)
    power = 120 + 180 * (1 - np.exp(-np.searchsorted(np.sort(start_ns), t) / 5000)) + rng.normal(0, 5, len(t))
    write_tables(run_dir, frame, pd.DataFrame({
        "t_ns": t, "gpu": 0, "power_w": power, "energy_mj": np.cumsum(power * 10.0), "temperature_c": np.nan,
        "sm_clock_mhz": np.nan, "throttle_reasons": np.nan}))
    RunStore(run_dir).write_manifest(Manifest(
        run_id="synthetic", status=RunStatus.COMPLETE, suite=SuiteInfo("synthetic", "synthetic", "0" * 64, n),
        variant=VariantInfo("synthetic"), meter=MeterInfo(kind="trace"), phase_weights={"prefill": 1.0, "decode": 1.0},
        segments=(Segment(index=0, started_wall_s=0.0, clock_wall_minus_mono_ns=0,
                          idle_window_ns=(t0 - 9_000_000_000, t0 - 1_000_000_000)),)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--keep", type=Path, default=None)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = (a.keep or Path(tmp)) / "synthetic"
        synthesize(run_dir, a.requests)
        t0 = time.perf_counter()
        finalize_run(run_dir)  # energy attribution + scores + summary (what `bench reanalyze` does)
        t1 = time.perf_counter()
        run = load_run(run_dir)
        t2 = time.perf_counter()
        run_report(run)
        t3 = time.perf_counter()
        print("| requests | power samples | analyse s | load s | render report s |")
        print("|---|---|---|---|---|")
        print(f"| {a.requests:,} | {len(run.power):,} | {t1 - t0:.2f} | {t2 - t1:.2f} | {t3 - t2:.2f} |")


if __name__ == "__main__":
    main()
