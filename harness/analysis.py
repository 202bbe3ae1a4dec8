"""From a run folder's journals to its tables and summary: energy attribution, scores,
latency statistics, validity flags. Used at the end of `bench run` and by `bench reanalyze` /
`bench score`, so a stored run can always be recomputed without the server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from harness.energy.analysis import ENERGY_COLUMNS, EnergySummary, EnergyWindow, analyse, unavailable
from harness.energy.attribute import PhaseWeights
from harness.energy.protocol_checks import steady_state_flags
from harness.scoring.quality import item_table, quality_summary, score_requests
from harness.store import (
    RunData,
    load_run,
    read_json,
    read_power,
    read_requests,
    write_summary,
    write_tables,
)


def _percentiles(series: pd.Series) -> dict:
    values = series.dropna().astype("float64")
    if values.empty:
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    return {"mean": float(values.mean()), "p50": float(values.quantile(0.5)),
            "p90": float(values.quantile(0.9)), "p99": float(values.quantile(0.99))}


def _pooled_itl_mean(ok: pd.DataFrame) -> float | None:
    """Mean of all inter-token gaps of all requests: Σ(last - first token) / Σ gaps, one gap per
    output token after the first (vLLM streams one token per chunk)."""
    tokens = ok["completion_tokens"].astype("float64")
    gaps = (tokens - 1).where(tokens > 1)
    span = ok["itl_mean_s"].astype("float64") * gaps
    valid = span.notna() & gaps.notna()
    return float(span[valid].sum() / gaps[valid].sum()) if valid.any() and gaps[valid].sum() > 0 else None


def latency_summary(requests: pd.DataFrame) -> dict:
    final = requests[~requests["retried"].astype(bool)]
    ok = final[final["status"] == "ok"]
    tokens = ok["completion_tokens"].astype("float64")
    tpot = (ok["e2e_s"] - ok["ttft_s"]) / (tokens - 1).where(tokens > 1)
    duration = (requests["end_ns"].max() - requests["start_ns"].min()) / 1e9 if len(requests) else 0
    return {
        "requests": int(len(final)), "ok": int(len(ok)), "failed": int(len(final) - len(ok)),
        "attempts": int(len(requests)), "retried_attempts": int(requests["retried"].astype(bool).sum()),
        "failures_by_status": {k: int(v) for k, v in final[final["status"] != "ok"]["status"].value_counts().items()},
        "duration_s": float(duration),
        "requests_per_s": float(len(ok) / duration) if duration else None,
        "output_tokens_per_s": float(tokens.sum() / duration) if duration else None,
        "prompt_tokens_mean": float(ok["prompt_tokens"].astype("float64").mean()) if len(ok) else None,
        "completion_tokens_mean": float(tokens.mean()) if len(ok) else None,
        # TPOT as vLLM defines it: (e2e - ttft) / (output tokens - 1) per request. ITL two ways (README):
        # per-request means (each request weighs the same), and pooled over all gaps (each gap weighs
        # the same, as `vllm bench serve` reports), whose mean is the total decode time over all gaps.
        "ttft_s": _percentiles(ok["ttft_s"]), "tpot_s": _percentiles(tpot),
        "itl_s": _percentiles(ok["itl_mean_s"]), "itl_pooled_mean_s": _pooled_itl_mean(ok),
        "e2e_s": _percentiles(ok["e2e_s"]),
        "by_task": {task: int(n) for task, n in final["task"].value_counts().sort_index().items()},
    }


def resume_gaps(manifest: dict, requests: pd.DataFrame) -> list[EnergyWindow]:
    """Stretches between run segments (a crash and `--resume`): no trace, not counted."""
    gaps = []
    for seg in manifest.get("segments", [])[1:]:
        started = seg.get("requests_started_ns")
        if started is None:
            continue
        before = requests[requests["start_ns"] < started]["end_ns"]
        after = requests[requests["start_ns"] >= started]["start_ns"]
        if len(before) and len(after) and after.min() > before.max():
            gaps.append(EnergyWindow(int(before.max()), int(after.min())))
    return gaps


def energy_for(manifest: dict, requests: pd.DataFrame, power: pd.DataFrame) -> tuple[pd.DataFrame, EnergySummary]:
    meter = manifest.get("meter") or {}
    if meter.get("kind", "none") == "none" and power.empty:
        reason = meter.get("unavailable_reason") or "no power meter was used"
        out = requests.copy()
        for col in ENERGY_COLUMNS:
            out[col] = np.nan
        return out, unavailable(reason)
    idle = idle_after = None
    segments = manifest.get("segments", [])
    if segments and segments[0].get("idle_window_ns"):
        idle = EnergyWindow(*segments[0]["idle_window_ns"])
    if segments and segments[-1].get("idle_after_window_ns"):
        idle_after = EnergyWindow(*segments[-1]["idle_after_window_ns"])
    limits = [g.get("power_limit_w") for g in meter.get("gpus", []) if g.get("power_limit_w")]
    weights = PhaseWeights(**manifest.get("phase_weights", {}))
    out, summary = analyse(power, requests, idle=idle, weights=weights,
                           power_limit_w=sum(limits) if limits else None, gaps=resume_gaps(manifest, requests),
                           idle_after=idle_after)
    for col in ENERGY_COLUMNS:
        if col not in out:
            out[col] = np.nan
    return out, summary


def build_summary(manifest: dict, requests: pd.DataFrame, energy: EnergySummary) -> dict:
    quality = quality_summary(requests)
    energy_block = energy.to_dict()
    total_score = quality.get("score_sum")
    energy_block["j_per_correct_answer"] = (energy.total_j / total_score
                                            if energy.available and total_score else None)
    return {
        "run_id": manifest.get("run_id"), "status": manifest.get("status"),
        "variant": (manifest.get("variant") or {}).get("name"), "suite": manifest.get("suite", {}).get("name"),
        "latency": latency_summary(requests), "energy": energy_block, "quality": quality,
        "flags": list(energy.flags) + steady_state_flags(_final_ok(requests), _concurrency(manifest))
        + ([f"incomplete: {manifest.get('incomplete_cause')}"] if manifest.get("status") == "incomplete" else [])
        + client_flags(manifest),
    }


def client_flags(manifest: dict) -> list[str]:
    """A segment whose load generator saturated (harness.load.ClientLoad) measured its own delays too."""
    flags = []
    for seg in manifest.get("segments", []):
        load = seg.get("client_load") or {}
        if load.get("saturated"):
            flags.append(f"client saturated: event-loop lag p99 {load['lag_p99_ms']:.1f} ms, CPU "
                         f"{load['cpu_share']:.0%} of a core; latencies include the client's own delay")
    return flags


def _final_ok(requests: pd.DataFrame) -> pd.DataFrame:
    final = requests[~requests["retried"].astype(bool)]
    return final[final["status"] == "ok"]


def _concurrency(manifest: dict) -> int:
    return int((manifest.get("settings") or {}).get("concurrency") or 1)


def finalize_run(run_dir: Path, power_trace: pd.DataFrame | None = None) -> dict:
    """Rebuild requests.parquet, power.parquet and summary.json from the journals (or from
    `power_trace`, an external trace already aligned to the run's clock)."""
    manifest = read_json(run_dir / "manifest.json")
    requests = read_requests(run_dir)
    power = power_trace if power_trace is not None else read_power(run_dir)
    requests, energy = energy_for(manifest, requests, power)
    requests = score_requests(requests)
    write_tables(run_dir, requests, power)
    item_table(requests).to_parquet(run_dir / "items.parquet")
    summary = build_summary(manifest, requests, energy)
    write_summary(run_dir, summary)
    return summary


def rescore(run_dir: Path) -> dict:
    """Recompute scores and the summary of a stored run (tables already consolidated)."""
    run: RunData = load_run(run_dir)
    requests = score_requests(run.requests)
    write_tables(run_dir, requests, None)
    item_table(requests).to_parquet(run_dir / "items.parquet")
    energy = EnergySummary(**{k: v for k, v in run.summary.get("energy", {}).items()
                              if k in EnergySummary.__dataclass_fields__}) if run.summary.get("energy") \
        else unavailable("not analysed")
    summary = build_summary(run.manifest, requests, energy)
    write_summary(run_dir, summary)
    return summary
