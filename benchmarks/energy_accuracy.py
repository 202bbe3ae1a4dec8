#!/usr/bin/env python3
"""Energy measurement accuracy: does the harness's arithmetic agree with the hardware?

For each run folder (recorded on a GPU machine): the energy counter's joules over the run
window, the trapezoid integral of sampled power, the sum of per-request joules plus the
unattributed joules, their relative differences, the sensor's measured update period, the
achieved sample rate and the sampler's CPU cost. Goals (issue 3): attribution sum within 0.5 %
of the counter, integral within 2 %, ≥ 100 Hz (or the sensor's own rate) at ≤ 1 % of a core.

    python benchmarks/energy_accuracy.py RUN_DIR [RUN_DIR ...]
    python benchmarks/energy_accuracy.py --live 5      # GPU machine: sample NVML for 5 s now
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from harness.energy.analysis import analyse
from harness.finalize import open_run as load_run

HEADER = ("| run | window s | counter J | integral J | Σ attributed + unattributed J | integral vs counter "
          "| sum vs counter | sensor period ms | sample rate Hz | sampler CPU % of a core |")


def row(name: str, summary: dict, meter_extra: dict) -> str:
    counter, integral = summary["counter_j"], summary["integral_j"]
    parts = summary["attributed_j"] + summary["unattributed_j"]

    def rel(x):
        return f"{(x - counter) / counter:+.3%}" if counter else "n/a"

    cpu = meter_extra.get("sampler_cpu_share_of_one_core")
    period = summary["sensor_period_s"]
    return (f"| {name} | {summary['window_s']:.2f} | {counter or float('nan'):.1f} | {integral:.1f} | {parts:.1f} "
            f"| {rel(integral)} | {rel(parts)} | {period * 1000 if period else float('nan'):.1f} "
            f"| {meter_extra.get('sampler_achieved_rate_hz') or summary['sample_rate_hz']:.1f} "
            f"| {'n/a' if cpu is None else f'{cpu * 100:.2f}'} |")


def from_runs(paths: list[Path]) -> None:
    print(HEADER)
    print("|" + "---|" * 10)
    for path in paths:
        run = load_run(path)
        energy = run.summary.energy
        if not energy.available:
            print(f"| {run.run_id} | energy unavailable: {energy.unavailable_reason} |")
            continue
        print(row(run.run_id, energy.to_dict(), run.manifest.meter.extra if run.manifest.meter else {}))


def live(seconds: float, save: Path | None) -> None:
    """Sample NVML for `seconds` with a synthetic schedule of back-to-back 'requests' of 0.5 s."""
    from harness.energy.meters import NvmlMeter

    meter = NvmlMeter(["0"])
    print(f"GPU {meter.info.gpus[0].name}, driver {meter.info.driver_version}, source {meter.info.power_source}, "
          f"sensor period at start-up {meter.info.sensor_period_s}")
    meter.start()
    t0 = time.monotonic_ns()
    time.sleep(seconds)
    t1 = time.monotonic_ns()
    samples = pd.DataFrame([s.__dict__ for s in meter.stop()])
    if save is not None:
        samples.to_parquet(save, index=False)
    step = 500_000_000
    starts = list(range(t0 + 10_000_000, t1 - step, step))
    requests = pd.DataFrame({"start_ns": starts, "end_ns": [s + step - 1_000_000 for s in starts],
                             "first_token_ns": [s + step // 5 for s in starts], "status": "ok",
                             "completion_tokens": 10})
    _, summary = analyse(samples, requests, idle=None)
    print(HEADER)
    print("|" + "---|" * 10)
    print(row("live", summary.to_dict(), meter.info.extra))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", type=Path)
    ap.add_argument("--live", type=float, default=None, help="sample NVML for this many seconds")
    ap.add_argument("--save", type=Path, default=None, help="with --live: write the samples to this parquet")
    a = ap.parse_args()
    if a.live:
        live(a.live, a.save)
    elif a.runs:
        from_runs(a.runs)
    else:
        ap.print_help()
        sys.exit(2)
