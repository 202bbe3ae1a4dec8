"""Plain-text renderings (return lines; only the CLI prints)."""

from __future__ import annotations

from pathlib import Path

from harness.history import RunRow
from harness.results import Summary
from harness.scoring.gate import GateResult, RatioEstimate


def _interval(e: RatioEstimate) -> str:
    if e.ratio is None:
        return "ratio undefined"
    if e.low is None:
        return f"ratio {e.ratio:.3f}  no interval ({e.note})"
    return f"ratio {e.ratio:.3f}  CI [{e.low:.3f}, {e.high:.3f}]"


def gate_lines(result: GateResult, baseline_id: str, candidate_id: str) -> list[str]:
    o = result.overall
    lines = [f"gate: {candidate_id} vs baseline {baseline_id}, threshold {result.threshold:.2f}, "
             f"{result.confidence:.0%} paired bootstrap over {o.items} items ({result.resamples} resamples)",
             f"{'task':<12} {'baseline':>9} {'candidate':>10}  interval"]
    for task, e in result.by_task.items():
        lines.append(f"{task:<12} {e.baseline_mean:>9.3f} {e.candidate_mean:>10.3f}  {_interval(e)}  {e.verdict}")
    lines.append(f"{'overall':<12} {o.baseline_mean:>9.3f} {o.candidate_mean:>10.3f}  {_interval(o)}")
    lines.append(f"verdict: {o.verdict}")
    if o.note:
        lines.append(f"note: {o.note}")
    if o.items_to_settle:
        lines.append(f"likely settled with ~{o.items_to_settle} items ({o.items_to_settle - o.items} more) at this "
                     f"spread, or more samples per item (--samples)")
    return lines


def _num(value, unit: str = "", digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}{' ' + unit if unit else ''}"


def _ci(low, high) -> str:
    return "" if low is None or high is None else f" [95% CI {low:.3g}, {high:.3g}]"


def summary_lines(summary: Summary, run_dir: Path, row: RunRow | None = None) -> list[str]:
    """What `bench run` and `bench reanalyze` print about one run: counts and latency, throughput,
    J/request (total and above idle) and quality. With the run's history row (`history.row_from_run`),
    J/request and quality come with their 95 % intervals — the history's definitions, so these lines,
    the sweep report and a trend never disagree."""
    lat, energy, quality = summary.latency, summary.energy, summary.quality
    lines = [f"run {summary.run_id}: {lat.ok}/{lat.requests} ok, e2e p50 {_num(lat.e2e_s.p50, 's')} "
             f"p99 {_num(lat.e2e_s.p99, 's')}, ttft p50 {_num(lat.ttft_s.p50, 's')} p99 {_num(lat.ttft_s.p99, 's')}"]
    if lat.requests_per_s is not None:
        lines.append(f"throughput: {lat.requests_per_s:.2f} req/s, {lat.output_tokens_per_s or 0:.1f} output tokens/s")
    if energy.available:
        lines.append(f"energy: {energy.total_j:.1f} J total ({energy.source}), idle {_num(energy.idle_power_w, 'W')}")
        j_ci = _ci(row.j_per_request_low, row.j_per_request_high) if row else ""
        above_ci = _ci(row.above_idle_j_per_request_low, row.above_idle_j_per_request_high) if row else ""
        lines.append(f"J/request: {_num(energy.j_per_request_mean)}{j_ci}, above idle "
                     f"{_num(energy.above_idle_j_per_request_mean)}{above_ci} ({energy.headline_requests} requests)")
    else:
        lines.append(f"energy: unavailable ({energy.unavailable_reason})")
    if quality.overall is not None:
        q_ci = _ci(row.quality_low, row.quality_high) if row else ""
        lines.append(f"quality: {quality.overall:.3f}{q_ci} overall over {quality.items} items ("
                     + ", ".join(f"{task} {_num(value)}" for task, value in quality.by_task.items()) + ")")
    lines += [f"flag: {flag}" for flag in summary.all_flags]
    lines.append(f"results: {run_dir}")
    return lines


def quality_lines(summary: Summary) -> list[str]:
    """What `bench score` prints: the overall score and one line per task."""
    quality = summary.quality
    return [f"{summary.run_id}: quality {quality.overall:.3f} over {quality.items} items",
            *(f"  {task:<12} {value:.3f}" for task, value in quality.by_task.items())]
