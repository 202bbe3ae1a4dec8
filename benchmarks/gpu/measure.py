#!/usr/bin/env python3
"""GPU-machine measurement plan for one variant on one GPU, under the protocol the competition charges
(harness.protocol): one server start, launched as the organisers do (`vllm serve MODEL --config`,
dummy weights), then

  1. the competition replay: every suite item once, cold (fresh server, no warm-up), then warm
     (caches reset, warm-up of noise twins at the run's concurrency) -- harness.competition;
  2. a concurrency sweep, first-seen prompts only: before each level the server's prefix/multimodal/
     encoder caches are reset and a warm-up of noise twins runs at that level until latency settles.

    CUDA_VISIBLE_DEVICES=2 python benchmarks/gpu/measure.py VARIANT --out DIR [--deadline-s 560]

Every run is an ordinary results folder (manifest with the segment's warm-up report and idle windows
before and after, requests/power parquet, summary). `plan.json` lists what ran and what was skipped."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from harness.competition import CompetitionSpec, competition_passes
from harness.config import RunSettings, Sampling, load_suite_spec, load_variant
from harness.progress import PlainProgress
from harness.protocol import reset_caches
from harness.runner import RunSpec, execute, resolve_model_path
from harness.server import LaunchedServer

# (concurrency, items, estimated seconds of one level on an H100/H200 incl. warm-up and idle windows)
SWEEP = [(1, 42, 75), (4, 168, 70), (8, 168, 55), (16, 168, 45), (32, 168, 40)]
COMPETITION = (16, 168, 110)  # concurrency, items, estimate for both passes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("variant")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--deadline-s", type=float, default=560.0, help="seconds from start by which to be done")
    ap.add_argument("--idle-s", type=float, default=5.0)
    ap.add_argument("--warmup", type=int, default=64, help="warm-up requests at most per level")
    ap.add_argument("--energy", default="nvml", help="none: dry run of the plan on a machine without a GPU")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of each run's items (dry runs)")
    ap.add_argument("--levels", default=",".join(str(c) for c, _, _ in SWEEP))
    ap.add_argument("--tag", default="", help="suffix of every run id (e.g. the GPU index)")
    a = ap.parse_args()
    t0 = time.monotonic()
    progress = PlainProgress()
    variant = load_variant(a.variant)
    suite = load_suite_spec("default")
    model_path, _ = resolve_model_path(variant, True, progress)
    name = f"{variant.name}{a.tag}"
    folder = a.out / name
    folder.mkdir(parents=True, exist_ok=True)
    plan = {"variant": variant.name, "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"), "ran": [], "skipped": []}

    def settings(run_id: str, concurrency: int, items: int) -> RunSettings:
        return RunSettings(results_dir=folder, run_id=run_id, limit=max(1, int(items * a.scale)),
                           concurrency=concurrency, warmup=a.warmup, seed=0, idle_s=a.idle_s,
                           sampling=Sampling(max_tokens=128, ignore_eos=True), energy=a.energy)

    def left() -> float:
        return a.deadline_s - (time.monotonic() - t0)

    with LaunchedServer(variant, model_path, folder, load_format_dummy=True) as server:
        plan["server_start_s"] = time.monotonic() - t0
        progress.message(f"server up after {plan['server_start_s']:.0f} s")
        concurrency, items, estimate = COMPETITION
        if left() > estimate:
            spec = CompetitionSpec(suite=suite, settings=settings("competition", concurrency, items), variant=variant,
                                   dummy_weights=True)
            competition_passes(spec, server, folder / "competition", progress)
            plan["ran"].append("competition")
        else:
            plan["skipped"].append("competition")
        for concurrency, items, estimate in SWEEP:
            if str(concurrency) not in a.levels.split(","):
                continue
            run_id = f"sweep-c{concurrency}"
            if left() < estimate:
                plan["skipped"].append(run_id)
                progress.message(f"skipping {run_id}: {left():.0f} s left")
                continue
            reset = reset_caches(server.base_url)
            progress.message(f"{run_id}: caches reset ({reset.describe()})")
            run = RunSpec(suite=suite, settings=settings(run_id, concurrency, items), variant=variant,
                          base_url=server.base_url, model=server.model, dummy_weights=True)
            execute(run, progress)
            plan["ran"].append(run_id)
            (folder / run_id / "cache_reset.json").write_text(json.dumps(reset.routes))
    plan["total_s"] = time.monotonic() - t0
    (folder / "plan.json").write_text(json.dumps(plan, indent=2))
    progress.message(f"done after {plan['total_s']:.0f} s: ran {plan['ran']}, skipped {plan['skipped']}")


if __name__ == "__main__":
    main()
