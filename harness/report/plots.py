"""Matplotlib figures of a stored run (Agg backend, PNG files). Each function takes tables and
returns the path it wrote, or None when the data for that plot is missing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from harness.energy.analysis import clean_power, curve_from_samples

MAX_POINTS = 20_000  # power points drawn; longer traces are averaged into bins first
DPI = 110


def pyplot():
    """matplotlib.pyplot on the Agg backend, loaded when the first figure is drawn: it costs about
    0.3 s of CPU, which the commands that draw nothing (`bench run`, `bench gate`) need not pay."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    pyplot().close(fig)
    return path


def in_flight(requests: pd.DataFrame, grid_ns: np.ndarray) -> np.ndarray:
    """Requests in flight at each grid time (event sweep, O((R + G) log R))."""
    starts = np.sort(requests["start_ns"].to_numpy(np.int64))
    ends = np.sort(requests["end_ns"].to_numpy(np.int64))
    return np.searchsorted(starts, grid_ns, side="right") - np.searchsorted(ends, grid_ns, side="right")


def power_over_time(power: pd.DataFrame, requests: pd.DataFrame, idle_w: float | None, path: Path) -> Path | None:
    if power.empty or requests.empty:
        return None
    curve = curve_from_samples(clean_power(power)[0])  # summed over GPUs as the energy numbers are
    t0 = int(requests["start_ns"].min())
    t, p = (curve.t_ns - t0) / 1e9, curve.power_w
    if len(t) > MAX_POINTS:
        bins = np.linspace(t[0], t[-1], MAX_POINTS + 1)
        which = np.clip(np.digitize(t, bins) - 1, 0, MAX_POINTS - 1)
        counts = np.bincount(which, minlength=MAX_POINTS)
        keep = counts > 0
        p = (np.bincount(which, weights=p, minlength=MAX_POINTS)[keep] / counts[keep])
        t = ((bins[:-1] + bins[1:]) / 2)[keep]
    fig, (top, bottom) = pyplot().subplots(2, 1, figsize=(9, 5), sharex=True, height_ratios=[3, 1])
    top.plot(t, p, lw=0.8, color="#1f5fa8", label="GPU power")
    if idle_w is not None:
        top.axhline(idle_w, color="#888", ls="--", lw=1, label=f"idle {idle_w:.0f} W")
    top.set_ylabel("power (W)")
    top.legend(loc="upper right", fontsize=8)
    top.set_title("GPU power and requests in flight")
    grid = np.linspace(0, (int(requests["end_ns"].max()) - t0), 2000).astype(np.int64) + t0
    bottom.step((grid - t0) / 1e9, in_flight(requests, grid), where="post", color="#c05a00", lw=1)
    bottom.set_ylabel("in flight")
    bottom.set_xlabel("time since first request (s)")
    return save_figure(fig, path)


def energy_by_task(requests: pd.DataFrame, path: Path) -> Path | None:
    ok = requests[(requests["status"] == "ok") & requests["energy_j"].notna()]
    if ok.empty:
        return None
    tasks = sorted(ok["task"].unique())
    fig, ax = pyplot().subplots(figsize=(9, 3.6))
    ax.boxplot([ok.loc[ok["task"] == t, "energy_j"] for t in tasks], showfliers=False)
    ax.set_xticks(range(1, len(tasks) + 1), tasks)
    ax.set_ylabel("energy per request (J)")
    ax.set_title("Joules per request by task")
    return save_figure(fig, path)


def latency_cdfs(requests: pd.DataFrame, path: Path) -> Path | None:
    ok = requests[requests["status"] == "ok"]
    if ok.empty:
        return None
    fig, ax = pyplot().subplots(figsize=(9, 3.6))
    for column, label in (("ttft_s", "time to first token"), ("e2e_s", "end-to-end")):
        values = np.sort(ok[column].dropna().to_numpy(float))
        if len(values):
            ax.plot(values, np.arange(1, len(values) + 1) / len(values), label=label)
    ax.set_xlabel("latency (s)")
    ax.set_ylabel("fraction of requests")
    ax.set_title("Latency distribution")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def phase_energy(requests: pd.DataFrame, path: Path) -> Path | None:
    ok = requests[(requests["status"] == "ok") & requests["energy_j"].notna()]
    if ok.empty:
        return None
    by_task = ok.groupby("task")[["prefill_energy_j", "decode_energy_j"]].mean()
    fig, ax = pyplot().subplots(figsize=(9, 3.6))
    ax.bar(by_task.index, by_task["prefill_energy_j"], label="prefill", color="#7a4fb0")
    ax.bar(by_task.index, by_task["decode_energy_j"], bottom=by_task["prefill_energy_j"], label="decode",
           color="#3d9a5b")
    ax.set_ylabel("mean energy per request (J)")
    ax.set_title("Prefill vs decode energy")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def energy_vs_quality(points: list[dict], threshold_quality: float | None, path: Path, threshold: float = 0.8) -> Path:
    """One point per run: x J/request, y quality, with the quality interval as error bars."""
    fig, ax = pyplot().subplots(figsize=(7, 4.5))
    for point in points:
        x, y = point["j_per_request"], point["quality"]
        if x is None or y is None:
            continue
        low, high = point.get("quality_low"), point.get("quality_high")
        yerr = [[y - low], [high - y]] if low is not None and high is not None else None
        ax.errorbar([x], [y], yerr=yerr, fmt="o", capsize=4)
        ax.annotate(point["label"], (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
    if threshold_quality is not None:
        ax.axhline(threshold_quality, color="#b00", ls="--", lw=1, label=f"quality gate ({threshold:.0%} of baseline)")
        ax.legend(fontsize=8)
    ax.set_xlabel("energy per request (J)")
    ax.set_ylabel("quality (mean score)")
    ax.set_title("Energy vs quality")
    return save_figure(fig, path)


# --- sweeps: one point per level -------------------------------------------------------------------

def _level_axis(ax, x: list[float], label: str, log_x: bool) -> None:
    if log_x:  # concurrency 1, 4, 16, 64: evenly spaced on a log axis, ticks at the levels themselves
        ax.set_xscale("log", base=2)
    ax.set_xticks(x, [f"{v:g}" for v in x])
    ax.minorticks_off()
    ax.set_xlabel(label)
    ax.grid(alpha=0.3)


def level_curves(x: list[float], curves: list[tuple[str, list, list | None, list | None]], *, xlabel: str,
                 ylabel: str, title: str, path: Path, log_x: bool = False) -> Path | None:
    """Curves over sweep levels: `curves` holds (label, y, low, high) with None where unknown;
    low/high (a confidence interval) become error bars where both are known."""
    drawn = [(label, y, lo, hi) for label, y, lo, hi in curves if any(v is not None for v in y)]
    if not x or not drawn:
        return None
    fig, ax = pyplot().subplots(figsize=(7.5, 4))
    for label, y, lo, hi in drawn:
        xs = [xv for xv, yv in zip(x, y, strict=True) if yv is not None]
        ys = [yv for yv in y if yv is not None]
        line = ax.plot(xs, ys, marker="o", label=label)[0]
        if lo is not None and hi is not None:
            bars = [(xv, yv, yv - a, b - yv) for xv, yv, a, b in zip(x, y, lo, hi, strict=True)
                    if yv is not None and a is not None and b is not None]
            if bars:
                bx, by, below, above = zip(*bars, strict=True)
                ax.errorbar(bx, by, yerr=[below, above], fmt="none", capsize=4, color=line.get_color())
    _level_axis(ax, x, xlabel, log_x)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def latency_by_level(x: list[float], panels: list[tuple[str, dict[str, list]]], *, xlabel: str, path: Path,
                     log_x: bool = False) -> Path | None:
    """One panel per latency (TTFT, ITL, end-to-end), one curve per percentile (p50, p90, p99), in ms."""
    panels = [(name, by_q) for name, by_q in panels if any(v is not None for ys in by_q.values() for v in ys)]
    if not x or not panels:
        return None
    fig, axes = pyplot().subplots(1, len(panels), figsize=(4 * len(panels), 3.8), squeeze=False)
    for ax, (name, by_q) in zip(axes[0], panels, strict=True):
        for q, ys in by_q.items():
            pts = [(xv, yv * 1e3) for xv, yv in zip(x, ys, strict=True) if yv is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=q)
        _level_axis(ax, x, xlabel, log_x)
        ax.set_ylabel(f"{name} (ms)")
        ax.set_title(name)
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def energy_latency_tradeoff(points: list[dict], path: Path) -> Path | None:
    """The energy–latency trade-off of a sweep: one point per level at (e2e latency, J/request), at
    p50 and at p99, each labelled with its level, joined in level order."""
    usable = [p for p in points if p.get("j_per_request") is not None
              and (p.get("e2e_p50_s") is not None or p.get("e2e_p99_s") is not None)]
    if not usable:
        return None
    fig, ax = pyplot().subplots(figsize=(7.5, 4.5))
    for key, label, marker in (("e2e_p50_s", "end-to-end p50", "o"), ("e2e_p99_s", "end-to-end p99", "s")):
        pts = [(p[key], p["j_per_request"], p["label"]) for p in usable if p.get(key) is not None]
        if not pts:
            continue
        xs, ys, _ = zip(*pts, strict=True)
        ax.plot(xs, ys, marker=marker, label=label)
    for p in usable:  # each level labelled once, its p50 and p99 joined at the same J/request
        known = [p[k] for k in ("e2e_p50_s", "e2e_p99_s") if p.get(k) is not None]
        ax.plot(known, [p["j_per_request"]] * len(known), color="#999", lw=0.8, ls=":")
        ax.annotate(p["label"], (known[0], p["j_per_request"]), textcoords="offset points", xytext=(-4, 6),
                    ha="right", fontsize=8)
    ax.set_xlabel("end-to-end latency (s)")
    ax.set_ylabel("energy per request (J)")
    ax.set_title("Energy–latency trade-off (one point per level)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
