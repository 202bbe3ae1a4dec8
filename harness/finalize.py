"""From a run folder's journals to its tables and summary: energy attribution, scores, latency
statistics, validity flags. Used at the end of `bench run`, by `bench reanalyze` / `bench score`,
and by every reader of a run whose tables are missing or damaged (`open_run`), so a stored run
can always be recomputed without the server."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from harness.energy.analysis import (
    ENERGY_COLUMNS,
    EnergySummary,
    EnergyWindow,
    analyse,
    gaps_between,
    measured_duration_s,
    measured_windows,
    unavailable,
)
from harness.energy.attribute import PhaseWeights
from harness.energy.meters import read_trace_file
from harness.energy.protocol_checks import steady_state_flags
from harness.errors import HarnessError
from harness.protocol import CacheReset
from harness.records import RunClock, RunStatus
from harness.report.render import run_report
from harness.report.sweep_report import is_sweep, read_index, sweep_point, sweep_report
from harness.report.text import quality_lines, summary_lines
from harness.results import LatencySummary, Manifest, Percentiles, Summary, final_attempts, mark_retried
from harness.scoring.quality import item_table, quality_summary, score_requests
from harness.store import (
    RunData,
    dedupe_power,
    load_run,
    read_manifest,
    read_power,
    read_requests,
    write_summary,
    write_tables,
)


def _percentiles(series: pd.Series) -> Percentiles:
    values = pd.to_numeric(series, errors="coerce").dropna().astype("float64")
    if values.empty:
        return Percentiles()
    return Percentiles(float(values.mean()), float(values.quantile(0.5)), float(values.quantile(0.9)),
                       float(values.quantile(0.99)))


def latency_summary(requests: pd.DataFrame) -> LatencySummary:
    final = final_attempts(requests)
    ok = final[final["status"] == "ok"]
    tokens = ok["completion_tokens"].astype("float64")
    tpot = (ok["e2e_s"] - ok["ttft_s"]) / (tokens - 1).where(tokens > 1)
    duration = measured_duration_s(measured_windows(requests))  # the same window as the energy's
    return LatencySummary(
        requests=int(len(final)), ok=int(len(ok)), failed=int(len(final) - len(ok)), attempts=int(len(requests)),
        retried_attempts=int(requests["retried"].astype(bool).sum()),
        failures_by_status={k: int(v) for k, v in final[final["status"] != "ok"]["status"].value_counts().items()},
        duration_s=float(duration),
        requests_per_s=float(len(ok) / duration) if duration else None,
        output_tokens_per_s=float(tokens.sum() / duration) if duration else None,
        prompt_tokens_mean=float(ok["prompt_tokens"].astype("float64").mean()) if len(ok) else None,
        completion_tokens_mean=float(tokens.mean()) if len(ok) else None,
        ttft_s=_percentiles(ok["ttft_s"]), tpot_s=_percentiles(tpot), itl_s=_percentiles(ok["itl_mean_s"]),
        e2e_s=_percentiles(ok["e2e_s"]),
        by_task={task: int(n) for task, n in final["task"].value_counts().sort_index().items()},
        itl_pooled_mean_s=_pooled_itl_mean(ok),
    )


def _pooled_itl_mean(ok: pd.DataFrame) -> float | None:
    """Mean of all inter-token gaps of all requests: Σ(last - first token) / Σ gaps, one gap per
    output token after the first (vLLM streams one token per chunk). TPOT (above) is vLLM's per-request
    (e2e - TTFT) / (tokens - 1); `itl_s` holds percentiles of per-request mean gaps."""
    tokens = ok["completion_tokens"].astype("float64")
    gaps = (tokens - 1).where(tokens > 1)
    span = ok["itl_mean_s"].astype("float64") * gaps
    valid = span.notna() & gaps.notna()
    return float(span[valid].sum() / gaps[valid].sum()) if valid.any() and gaps[valid].sum() > 0 else None


def client_flags(manifest: Manifest) -> list[str]:
    """A segment whose load generator saturated (harness.load.ClientLoad) measured its own delays too."""
    flags = []
    for seg in manifest.segments:
        load = seg.client_load or {}
        if load.get("saturated"):
            flags.append(f"client saturated: event-loop lag p99 {load['lag_p99_ms']:.1f} ms, CPU "
                         f"{load['cpu_share']:.0%} of a core; latencies include the client's own delay")
    return flags


def assign_segments(manifest: Manifest, requests: pd.DataFrame) -> pd.DataFrame:
    """Older records carry no segment: take it from the manifest's segment start times."""
    if requests.empty or requests["segment"].notna().all():
        return requests
    starts = [(s.index, s.requests_started_ns) for s in manifest.segments if s.requests_started_ns is not None]
    out = requests.copy()
    missing = out["segment"].isna()
    derived = np.zeros(len(out), dtype=np.int64)
    for index, started in starts[1:]:
        derived[out["start_ns"].to_numpy(np.int64) >= started] = index
    out.loc[missing, "segment"] = derived[missing.to_numpy()]
    return out


def first_pass_only(manifest: Manifest) -> bool:
    """Passes of `--samples K` that followed one another without a complete cache reset re-sent cached
    prompts: their energy is not what a first-seen suite costs."""
    resets = [reset for segment in manifest.segments for reset in segment.cache_resets]
    return bool(resets) and not all(CacheReset(reset).complete for reset in resets)


def energy_for(manifest: Manifest, requests: pd.DataFrame, power: pd.DataFrame) -> tuple[pd.DataFrame, EnergySummary]:
    meter = manifest.meter
    if (meter is None or meter.kind == "none") and power.empty:
        reason = (meter.unavailable_reason if meter else None) or "no power meter was used"
        return requests.assign(**{col: np.nan for col in ENERGY_COLUMNS}), unavailable(reason)
    first = manifest.segments[0] if manifest.segments else None
    last = manifest.segments[-1] if manifest.segments else None
    idle = EnergyWindow(*first.idle_window_ns) if first and first.idle_window_ns else None
    idle_after = EnergyWindow(*last.idle_after_window_ns) if last and last.idle_after_window_ns else None
    weights = PhaseWeights(**manifest.phase_weights)
    out, summary = analyse(dedupe_power(power) if len(power) else power, requests, idle=idle, weights=weights,
                           power_limit_w=manifest.power_limit_w,
                           gaps=gaps_between(measured_windows(requests)), idle_after=idle_after,
                           first_pass_only=first_pass_only(manifest))
    return out.assign(**{col: np.nan for col in ENERGY_COLUMNS if col not in out}), summary


def build_summary(manifest: Manifest, requests: pd.DataFrame, energy: EnergySummary,
                  status: RunStatus | None = None) -> Summary:
    status = status or manifest.status
    quality = quality_summary(requests)
    if energy.available and quality.score_sum:
        energy = replace(energy, j_per_correct_answer=energy.total_j / quality.score_sum)
    final = final_attempts(requests)
    flags = steady_state_flags(final[final["status"] == "ok"], manifest.concurrency)
    if status == RunStatus.INCOMPLETE:
        flags.append(f"incomplete: {manifest.incomplete_cause}")
    repaired = {k: v for seg in manifest.segments for k, v in seg.journal_repaired_bytes.items()}
    if repaired:
        flags.append("journal_repaired: torn tail dropped on resume ("
                     + ", ".join(f"{k} {v} bytes" for k, v in repaired.items()) + ")")
    flags += client_flags(manifest)
    return Summary(run_id=manifest.run_id, status=status,
                   variant=manifest.variant.name if manifest.variant else None, suite=manifest.suite.name,
                   latency=latency_summary(requests), energy=energy, quality=quality, flags=tuple(flags))


def compute(manifest: Manifest, requests: pd.DataFrame, power: pd.DataFrame,
            status: RunStatus | None = None) -> tuple[pd.DataFrame, pd.DataFrame, Summary]:
    """(scored request table with energy columns, item table, summary): pure, no files."""
    if "retried" not in requests:
        requests = mark_retried(requests)
    requests = assign_segments(manifest, requests)
    requests, energy = energy_for(manifest, requests, power)
    requests = score_requests(requests)
    return requests, item_table(requests), build_summary(manifest, requests, energy, status)


def finalize_run(run_dir: Path, power_trace: pd.DataFrame | None = None, status: RunStatus | None = None) -> Summary:
    """Rebuild requests.parquet, power.parquet, items.parquet and summary.json from the journals
    (or from `power_trace`, an external trace already aligned to the run's clock). `status` is
    what the summary says (the runner writes "complete" into the manifest only after this)."""
    manifest = read_manifest(run_dir)
    power = power_trace if power_trace is not None else read_power(run_dir)
    requests, items, summary = compute(manifest, read_requests(run_dir), power, status)
    write_tables(run_dir, requests, power, items)
    write_summary(run_dir, summary)
    return summary


def reanalyze(run_dir: Path, power_trace: Path | None = None) -> Summary:
    """`bench reanalyze`: every energy column again, optionally from an external trace aligned
    with the run's recorded clock offset."""
    trace = None
    if power_trace is not None:
        manifest = read_manifest(run_dir)
        offset = manifest.first_clock_offset_ns
        trace = read_trace_file(power_trace, RunClock(offset) if offset is not None else None)
    return finalize_run(run_dir, power_trace=trace)


def rescore(run_dir: Path) -> Summary:
    """Recompute scores and the summary of a stored run (energy columns kept)."""
    run = open_run(run_dir)
    requests = score_requests(run.requests)
    items = item_table(requests)
    energy = run.summary.energy if run.summary else unavailable("not analysed")
    summary = build_summary(run.manifest, requests, energy, run.summary.status if run.summary else None)
    write_tables(run_dir, requests, None, items)
    write_summary(run_dir, summary)
    return summary


def open_run(run_dir: Path) -> RunData:
    """A stored run for readers (report, compare, gate, submit): when its tables or summary are
    missing or damaged (a killed run), they are rebuilt in memory from the journals."""
    run = load_run(run_dir)
    if not run.stale:
        return run
    requests, _, summary = compute(run.manifest, read_requests(run.dir), run.power)
    return replace(run, requests=requests, summary=summary, stale=False)


# --- the commands that read a stored run (each returns the lines `bench` prints) -----------------

def reanalyze_command(run_dir: Path, power_trace: Path | None = None) -> list[str]:
    """`bench reanalyze`."""
    return summary_lines(reanalyze(run_dir, power_trace), run_dir)


def score_command(run_dir: Path) -> list[str]:
    """`bench score`."""
    summary = rescore(run_dir)
    if not summary.quality.scored:
        raise HarnessError(f"{run_dir}: no request could be scored")
    return quality_lines(summary)


def report_sweep(folder: Path, out: Path | None = None) -> tuple[Path, Path]:
    """The sweep report of a sweep folder (`RUN_ID-sweep`), from its index and the levels' stored runs."""
    points = [sweep_point(open_run(level.run_dir), level.name, level.caches) for level in read_index(folder)]
    return sweep_report(points, out or folder, Path(folder).name.removesuffix("-sweep"))


def report_command(run_dir: Path, out: Path | None = None) -> list[str]:
    """`bench report`: report.md, report.html and plots of a stored run (sweep.md, sweep.html and the
    level curves of a sweep folder)."""
    md, page = report_sweep(run_dir, out) if is_sweep(run_dir) else run_report(open_run(run_dir), out)
    return [f"wrote {md} and {page}"]
