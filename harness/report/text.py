"""Plain-text renderings (return lines; only the CLI prints)."""

from __future__ import annotations

from pathlib import Path

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


def _fmt(value, unit: str) -> str:
    return "n/a" if value is None else f"{value:.3f} {unit}"


def summary_lines(summary: Summary, run_dir: Path) -> list[str]:
    """What `bench run` and `bench reanalyze` print about one run."""
    lat, energy, quality = summary.latency, summary.energy, summary.quality
    lines = [f"run {summary.run_id}: {lat.ok}/{lat.requests} ok, "
             f"e2e p50 {_fmt(lat.e2e_s.p50, 's')}, ttft p50 {_fmt(lat.ttft_s.p50, 's')}"]
    if lat.requests_per_s is not None:
        lines.append(f"throughput: {lat.requests_per_s:.2f} req/s, {lat.output_tokens_per_s or 0:.1f} output tokens/s")
    if energy.available:
        lines.append(f"energy: {energy.total_j:.1f} J total ({energy.source}), "
                     f"{_fmt(energy.j_per_request_mean, 'J/request')}, idle {_fmt(energy.idle_power_w, 'W')}")
    else:
        lines.append(f"energy: unavailable ({energy.unavailable_reason})")
    if quality.overall is not None:
        lines.append(f"quality: {quality.overall:.3f} overall over {quality.items} items ("
                     + ", ".join(f"{task} {'n/a' if value is None else format(value, '.3f')}"
                                 for task, value in quality.by_task.items()) + ")")
    lines += [f"flag: {flag}" for flag in summary.all_flags]
    lines.append(f"results: {run_dir}")
    return lines


def quality_lines(summary: Summary) -> list[str]:
    """What `bench score` prints: the overall score and one line per task."""
    quality = summary.quality
    return [f"{summary.run_id}: quality {quality.overall:.3f} over {quality.items} items",
            *(f"  {task:<12} {value:.3f}" for task, value in quality.by_task.items())]
