"""Plain-text renderings (return lines; only the CLI prints)."""

from __future__ import annotations

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
