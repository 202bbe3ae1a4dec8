#!/usr/bin/env python3
"""GPU-machine measurement plan: start one variant's vLLM server through the harness (dummy
weights), then run the harness's own `bench run` logic against it several times -- one request
at a time and many in flight, repeated -- so one ~4-minute server start serves every repeat.

    python benchmarks/gpu/measure.py VARIANT --out DIR [--deadline-s 560] [--repeats 3]

Each run is an ordinary results folder (manifest, requests/power parquet, summary); the variant
is recorded as launched by this script (`attached: true` in its manifest)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from harness.config import RunSettings, Sampling, load_suite_spec, load_variant
from harness.progress import PlainProgress
from harness.runner import RunSpec, execute, resolve_model_path
from harness.server import LaunchedServer

# (concurrency, items, warm-up requests, estimated seconds per run on an H100/H200)
PLAN = [(1, 24, 2, 40), (16, 168, 16, 30)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("variant")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--deadline-s", type=float, default=560.0, help="seconds from start by which to be done")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--idle-s", type=float, default=5.0)
    ap.add_argument("--energy", default="nvml", help="none: dry run of the plan on a machine without a GPU")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of each run's items (dry runs)")
    a = ap.parse_args()
    t0 = time.monotonic()
    progress = PlainProgress()
    variant = load_variant(a.variant)
    suite = load_suite_spec("default")
    model_path, _ = resolve_model_path(variant, True, progress)
    session = a.out / f"{variant.name}-server"
    session.mkdir(parents=True, exist_ok=True)
    with LaunchedServer(variant, model_path, session, load_format_dummy=True) as server:
        progress.message(f"server up after {time.monotonic() - t0:.0f} s")
        for repeat in range(a.repeats):
            for concurrency, items, warmup, estimate in PLAN:
                left = a.deadline_s - (time.monotonic() - t0)
                if left < estimate + a.idle_s + 15:
                    progress.message(f"skipping c{concurrency} r{repeat}: {left:.0f} s left")
                    continue
                settings = RunSettings(
                    results_dir=a.out, run_id=f"{variant.name}-c{concurrency}-r{repeat}",
                    limit=max(1, int(items * a.scale)),
                    concurrency=concurrency, warmup=warmup, seed=repeat * 1000, idle_s=a.idle_s,
                    sampling=Sampling(max_tokens=128, ignore_eos=True), energy=a.energy,
                )
                spec = RunSpec(suite=suite, settings=settings, variant=variant, base_url=server.base_url,
                               model=server.model, dummy_weights=True)
                execute(spec, progress)
    progress.message(f"done after {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
