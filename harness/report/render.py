"""Reports built from stored result files only: `bench report` (one run) and `bench compare`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from harness.report import plots
from harness.report.document import Document, write
from harness.scoring.gate import GateResult
from harness.store import RunData

SAMPLE_ANSWERS_PER_TASK = 2


def fmt(value, unit: str = "", digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if abs(value) >= 1000:
            text = f"{value:,.0f}"
        elif abs(value) >= 100:
            text = f"{value:.1f}"
        else:
            text = f"{value:.{digits}g}"
    else:
        text = str(value)
    return f"{text} {unit}".strip()


def _gpus(manifest: dict) -> str:
    gpus = manifest.get("meter", {}).get("gpus", [])
    return ", ".join(f"{g['name']} ({g['uuid'][:12]}…)" for g in gpus) or "none"


def header_rows(run: RunData) -> list[list]:
    m = run.manifest
    variant = m.get("variant", {})
    server = m.get("server", {})
    meter = m.get("meter", {})
    created = dt.datetime.fromtimestamp(m.get("created_wall_s", 0), dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [
        ["run", run.run_id], ["status", m.get("status")], ["date", created],
        ["variant", f"{variant.get('name')} ({'attached' if variant.get('attached') else 'launched'})"],
        ["model", variant.get("model") or server.get("model")],
        ["server flags", " ".join(f"{k}={v}" for k, v in sorted((variant.get("vllm") or {}).items())) or "n/a"],
        ["vLLM", server.get("vllm_version")], ["GPUs", _gpus(m)], ["driver", meter.get("driver_version")],
        ["power source", meter.get("power_source") or meter.get("unavailable_reason")],
        ["suite", f"{m['suite']['name']} ({m['suite']['items']} items, sha256 {m['suite']['hash'][:16]})"],
        ["sampling sent", ", ".join(f"{k}={v}" for k, v in m.get("sampling_sent", {}).items())],
        ["host", f"{m.get('host', {}).get('cpu')} ({m.get('host', {}).get('platform')})"],
    ]


def metric_rows(summary: dict) -> list[list]:
    lat, e, q = summary["latency"], summary["energy"], summary["quality"]
    rows = [
        ["requests (ok / failed)", f"{lat['ok']} / {lat['failed']}"],
        ["total energy", fmt(e.get("total_j"), "J") + (f" ({e['source']})" if e.get("source") else "")],
        ["energy above idle", fmt(e.get("above_idle_j"), "J")],
        ["J / request (mean, median, p90)",
         ", ".join(fmt(e.get(f"j_per_request_{k}")) for k in ("mean", "median", "p90"))],
        ["J / output token", fmt(e.get("j_per_output_token"))],
        ["J / correct answer", fmt(e.get("j_per_correct_answer"))],
        ["mean power / idle power", f"{fmt(e.get('mean_power_w'), 'W')} / {fmt(e.get('idle_power_w'), 'W')}"],
        ["throughput", f"{fmt(lat.get('requests_per_s'), 'req/s')}, {fmt(lat.get('output_tokens_per_s'), 'tok/s')}"],
    ]
    for key, label in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2e_s", "E2E")):
        p = lat[key]
        rows.append([f"{label} p50 / p90 / p99 (s)", " / ".join(fmt(p[x]) for x in ("p50", "p90", "p99"))])
    rows.append(["quality (overall)", fmt(q.get("overall"))])
    for task, value in (q.get("by_task") or {}).items():
        rows.append([f"quality: {task} ({q.get('metric_by_task', {}).get(task, '')})", fmt(value)])
    if not e.get("available"):
        rows.insert(1, ["energy", f"unavailable: {e.get('unavailable_reason')}"])
    return rows


def run_report(run: RunData, out_dir: Path | None = None) -> tuple[Path, Path]:
    out = out_dir or run.dir
    out.mkdir(parents=True, exist_ok=True)
    summary, requests = run.summary, run.requests
    doc = Document(f"Energy report: {run.run_id}")
    doc.table(["", ""], header_rows(run))
    flags = summary.get("flags", [])
    doc.heading("Validity")
    doc.bullets(flags or ["no validity flags raised"], css="flag" if flags else None)
    doc.heading("Results")
    doc.table(["measure", "value"], metric_rows(summary))
    doc.heading("Plots")
    energy = summary["energy"]
    final = requests[~requests["retried"].astype(bool)] if "retried" in requests else requests
    if energy.get("available"):
        doc.image(plots.power_over_time(run.power, requests, energy.get("idle_power_w"), out / "power.png"),
                  "GPU power over time with requests in flight")
        doc.image(plots.energy_by_task(final, out / "energy_by_task.png"), "Joules per request by task")
        doc.image(plots.phase_energy(final, out / "phase_energy.png"), "Prefill vs decode energy")
    else:
        doc.para(f"No energy plots: energy unavailable ({energy.get('unavailable_reason')}).", css="muted")
    doc.image(plots.latency_cdfs(final, out / "latency.png"), "Latency CDFs")
    doc.heading("Sample answers")
    samples = final.groupby("task", sort=True).head(SAMPLE_ANSWERS_PER_TASK)
    doc.table(["item", "task", "answer", "references", "score"],
              [[r.item_id, r.task, r.output_text, " | ".join(r.references if r.references is not None else []),
                fmt(getattr(r, "score", None))] for r in samples.itertuples()])
    return write(doc, out, "report")


def compare_report(runs: list[RunData], gates: dict[str, GateResult], problems: list[str],
                   out: Path) -> tuple[Path, Path]:
    """Side by side, deltas against the first run (the baseline), gate verdicts, energy-quality plot."""
    out.mkdir(parents=True, exist_ok=True)
    base = runs[0]
    doc = Document(f"Comparison against {base.run_id}")
    if problems:
        doc.para("Compared with --force although the runs differ:", css="flag")
        doc.bullets(problems, css="flag")
    measures = [
        ("J/request", lambda s: s["energy"].get("j_per_request_mean")),
        ("J/output token", lambda s: s["energy"].get("j_per_output_token")),
        ("total J", lambda s: s["energy"].get("total_j")),
        ("above-idle J", lambda s: s["energy"].get("above_idle_j")),
        ("J/correct answer", lambda s: s["energy"].get("j_per_correct_answer")),
        ("E2E p50 s", lambda s: s["latency"]["e2e_s"]["p50"]),
        ("TTFT p50 s", lambda s: s["latency"]["ttft_s"]["p50"]),
        ("quality", lambda s: s["quality"].get("overall")),
    ]
    headers = ["measure", base.run_id] + [x for r in runs[1:] for x in (r.run_id, "Δ vs baseline")]
    rows = []
    for name, get in measures:
        b = get(base.summary)
        row = [name, fmt(b)]
        for run in runs[1:]:
            v = get(run.summary)
            rel = f"{(v - b) / b:+.1%}" if isinstance(v, (int, float)) and isinstance(b, (int, float)) and b else "n/a"
            row += [fmt(v), rel]
        rows.append(row)
    doc.table(headers, rows)
    doc.heading("Quality gate")
    gate_rows = []
    for run_id, g in gates.items():
        o = g.overall
        interval = "undefined" if o.ratio is None else f"{o.ratio:.3f} [{o.low:.3f}, {o.high:.3f}]"
        gate_rows.append([run_id, interval, f"{g.threshold:.2f}", o.verdict])
    doc.table(["candidate", f"quality ratio ({next(iter(gates.values())).confidence:.0%} CI)" if gates else "ratio",
               "threshold", "verdict"], gate_rows)
    base_q = base.summary["quality"].get("overall")
    points = [{"label": base.run_id, "j_per_request": base.summary["energy"].get("j_per_request_mean"),
               "quality": base_q}]
    for run in runs[1:]:
        g = gates.get(run.run_id)
        point = {"label": run.run_id, "j_per_request": run.summary["energy"].get("j_per_request_mean"),
                 "quality": run.summary["quality"].get("overall")}
        if g is not None and g.overall.ratio is not None and base_q:
            point.update(quality_low=g.overall.low * base_q, quality_high=g.overall.high * base_q)
        points.append(point)
    if any(p["j_per_request"] is not None for p in points):
        doc.image(plots.energy_vs_quality(points, 0.8 * base_q if base_q else None, out / "energy_quality.png"),
                  "Energy per request vs quality")
    else:
        doc.para("No energy-quality plot: no run has energy numbers.", css="muted")
    return write(doc, out, "compare")
