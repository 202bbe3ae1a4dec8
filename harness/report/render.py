"""Reports built from stored result files only: `bench report` (one run) and `bench compare`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from harness.report import columns, plots
from harness.report.document import Document, write
from harness.results import Summary, final_attempts
from harness.scoring.gate import DEFAULT_THRESHOLD, GateResult
from harness.store import RunData, output_dir

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


def _gpus(run: RunData) -> str:
    meter = run.manifest.meter
    return ", ".join(f"{g.name} ({g.uuid[:12]}…)" for g in (meter.gpus if meter else ())) or "none"


def header_rows(run: RunData) -> list[list]:
    m = run.manifest
    variant, server, meter, suite = m.variant, m.server, m.meter, m.suite
    created = dt.datetime.fromtimestamp(m.created_wall_s, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [
        ["run", run.run_id], ["status", m.status.value], ["date", created],
        ["variant", f"{variant.name} ({'attached' if variant.attached else 'launched'})" if variant else "n/a"],
        ["model", (variant.model if variant else None) or (server.model if server else None)],
        ["server flags", " ".join(f"{k}={v}" for k, v in sorted((variant.vllm if variant else {}).items())) or "n/a"],
        ["vLLM", server.vllm_version if server else None], ["GPUs", _gpus(run)],
        ["driver", meter.driver_version if meter else None],
        ["power source", (meter.power_source or meter.unavailable_reason) if meter else None],
        ["suite", f"{suite.name} ({suite.items} items, sha256 {suite.hash[:16]})"],
        ["sampling sent", ", ".join(f"{k}={v}" for k, v in m.sampling_sent.items())],
        ["host", f"{m.host.cpu} ({m.host.platform})"],
    ]


def metric_rows(summary: Summary) -> list[list]:
    lat, e, q = summary.latency, summary.energy, summary.quality
    rows = [
        ["requests (ok / failed)", f"{lat.ok} / {lat.failed}"],
        ["total energy", fmt(e.total_j, "J") + (f" ({e.source})" if e.source else "")],
        ["energy above idle", fmt(e.above_idle_j, "J")],
        ["J / request (mean, median, p90)",
         ", ".join(fmt(v) for v in (e.j_per_request_mean, e.j_per_request_median, e.j_per_request_p90))],
        ["J / output token", fmt(e.j_per_output_token)],
        ["J / correct answer", fmt(e.j_per_correct_answer)],
        ["mean power / idle power (before, after)", f"{fmt(e.mean_power_w, 'W')} / {fmt(e.idle_power_w, 'W')}, "
                                                    f"{fmt(e.idle_after_power_w, 'W')}"],
        ["throughput", f"{fmt(lat.requests_per_s, 'req/s')}, {fmt(lat.output_tokens_per_s, 'tok/s')}"],
    ]
    for p, label in ((lat.ttft_s, "TTFT"), (lat.tpot_s, "TPOT"), (lat.e2e_s, "E2E")):
        rows.append([f"{label} p50 / p90 / p99 (s)", " / ".join(fmt(x) for x in (p.p50, p.p90, p.p99))])
    rows.append(["quality (overall)", fmt(q.overall)])
    for task, value in q.by_task.items():
        rows.append([f"quality: {task} ({q.metric_by_task.get(task, '')})", fmt(value)])
    if not e.available:
        rows.insert(1, ["energy", f"unavailable: {e.unavailable_reason}"])
    return rows


def run_report(run: RunData, out_dir: Path | None = None) -> tuple[Path, Path]:
    out = output_dir(out_dir or run.dir)
    summary, requests = run.summary, run.requests
    doc = Document(f"Energy report: {run.run_id}")
    doc.table(["", ""], header_rows(run))
    flags = summary.all_flags
    doc.heading("Validity")
    doc.bullets(flags or ["no validity flags raised"], css="flag" if flags else None)
    doc.heading("Results")
    doc.table(["measure", "value"], metric_rows(summary))
    doc.heading("Plots")
    energy = summary.energy
    final = final_attempts(requests)
    if energy.available:
        doc.image(plots.power_over_time(run.power, requests, energy.idle_power_w, out / "power.png"),
                  "GPU power over time with requests in flight")
        doc.image(plots.energy_by_task(final, out / "energy_by_task.png"), "Joules per request by task")
        doc.image(plots.phase_energy(final, out / "phase_energy.png"), "Prefill vs decode energy")
    else:
        doc.para(f"No energy plots: energy unavailable ({energy.unavailable_reason}).", css="muted")
    doc.image(plots.latency_cdfs(final, out / "latency.png"), "Latency CDFs")
    doc.heading("Sample answers")
    samples = final.groupby("task", sort=True).head(SAMPLE_ANSWERS_PER_TASK)
    doc.table(["item", "task", "answer", "references", "score"],
              [[r.item_id, r.task, r.output_text, " | ".join(r.references if r.references is not None else []),
                fmt(getattr(r, "score", None))] for r in samples.itertuples()])
    return write(doc, out, "report")


def compare_report(runs: list[RunData], gates: dict[str, GateResult], problems: list[str],
                   out: Path, threshold: float = DEFAULT_THRESHOLD) -> tuple[Path, Path]:
    """Side by side, deltas against the first run (the baseline), gate verdicts, energy-quality plot."""
    out = output_dir(out)
    base = runs[0]
    doc = Document(f"Comparison against {base.run_id}")
    if problems:
        doc.para("Compared with --force although the runs differ:", css="flag")
        doc.bullets(problems, css="flag")
    headers = ["measure", base.run_id] + [x for r in runs[1:] for x in (r.run_id, "Δ vs baseline")]
    rows = []
    for column in columns.COMPARE:
        b = column.get(base.summary)
        row = [column.heading, fmt(b)]
        for run in runs[1:]:
            v = column.get(run.summary)
            rel = f"{(v - b) / b:+.1%}" if isinstance(v, (int, float)) and isinstance(b, (int, float)) and b else "n/a"
            row += [fmt(v), rel]
        rows.append(row)
    doc.table(headers, rows)
    doc.heading("Quality gate")
    gate_rows = []
    for run_id, g in gates.items():
        o = g.overall
        interval = "undefined" if o.low is None else f"{o.ratio:.3f} [{o.low:.3f}, {o.high:.3f}]"
        gate_rows.append([run_id, interval, f"{g.threshold:.2f}", o.verdict])
    doc.table(["candidate", f"quality ratio ({next(iter(gates.values())).confidence:.0%} CI)" if gates else "ratio",
               "threshold", "verdict"], gate_rows)
    base_q = base.summary.quality.overall
    points = [{"label": base.run_id, "j_per_request": base.summary.energy.j_per_request_mean, "quality": base_q}]
    for run in runs[1:]:
        g = gates.get(run.run_id)
        point = {"label": run.run_id, "j_per_request": run.summary.energy.j_per_request_mean,
                 "quality": run.summary.quality.overall}
        if g is not None and g.overall.low is not None and base_q:
            point.update(quality_low=g.overall.low * base_q, quality_high=g.overall.high * base_q)
        points.append(point)
    if any(p["j_per_request"] is not None for p in points):
        doc.image(plots.energy_vs_quality(points, threshold * base_q if base_q else None, out / "energy_quality.png",
                                          threshold=threshold),
                  "Energy per request vs quality")
    else:
        doc.para("No energy-quality plot: no run has energy numbers.", css="muted")
    return write(doc, out, "compare")
