"""The night report (Markdown + self-contained HTML): what ran in which order, what failed and why
(server log tail), gate verdicts, the comparison within each GPU, the card-to-card spread, changes
against previous nights, and the trend plots from the history (this night included)."""

from __future__ import annotations

from pathlib import Path

from harness.report import document
from harness.report.trends import trend_plot


def _f(value, fmt: str = "{:.4g}") -> str:
    return "-" if value is None else fmt.format(value)


def write_night_report(config, result, history_rows) -> tuple[Path, Path]:
    out = result.night_dir
    out.mkdir(parents=True, exist_ok=True)
    doc = document.Document(f"Night {result.night_id} ({config.name})")
    code = result.exit_code
    meaning = [text for bit, text in ((1, "a gate failed"), (2, "a run failed"), (4, "a regression was flagged"))
               if code & bit] or ["all good"]
    doc.para(f"Exit code {code}: {', '.join(meaning)}. Baseline {config.baseline.label}; candidates "
             f"{', '.join(c.label for c in config.candidates)}; suite {config.suite}"
             f"{f' (first {config.limit} items)' if config.limit else ''}, {config.samples} sample(s), concurrency "
             f"{', '.join(map(str, config.concurrency))}, {config.repeats} repeat(s) in {config.order} order.")

    if result.rows and all(r.j_per_request is None for r in result.rows):
        doc.para("No energy was measured in these runs (no GPU meter here): the J/request columns are empty; "
                 "quality and latency are still compared and tracked.", "muted")
    doc.heading("Runs (in the order they ran)")
    by_dir = {r.run_dir: r for r in result.rows}
    rows = []
    for o in result.outcomes:
        r = by_dir.get(str(Path(o.run_dir).resolve()))
        cool = o.cooldown or {}
        rows.append([o.lane or "-", o.position, o.label, o.concurrency, "ok" if o.ok else "FAILED",
                     _f(r and r.j_per_request), _f(r and r.j_per_request_low) + " .. " + _f(r and r.j_per_request_high),
                     _f(r and r.quality, "{:.3f}"), _f(r and r.e2e_p50_s, "{:.3f}"),
                     f"{cool['waited_s']:.0f} s ({cool['reason']})" if cool.get("temperature_c") is not None else "-",
                     "; ".join(r.flag_list if r else []) or (o.error or "")])
    doc.table(["GPU", "#", "variant", "in flight", "status", "J/request", "95% CI", "quality", "e2e p50 s",
               "cooldown", "flags / error"], rows)
    failed = [o for o in result.outcomes if not o.ok]
    if failed:
        doc.heading("What failed")
        for o in failed:
            doc.para(f"{o.run_id}: {o.error}", "flag")
            if o.log_tail:
                doc.para("server log tail:\n" + o.log_tail, "muted")

    doc.heading("Gate: candidate quality ≥ threshold × baseline")
    doc.table(["GPU", "in flight", "candidate", "verdict", "ratio", "CI", "items", "note"],
              [[g["lane"] or "-", g["concurrency"], g["candidate"], g["verdict"], _f(g.get("ratio"), "{:.3f}"),
                f"{_f(g.get('low'), '{:.3f}')} .. {_f(g.get('high'), '{:.3f}')}", g.get("items", "-"),
                g.get("note") or ""] for g in result.gates])

    doc.heading("This night, within each GPU (mean over repeats)")
    doc.table(["GPU", "in flight", "variant", "J/request", "vs baseline", "quality", "e2e p50 s"],
              [[c["lane"] or "-", c["concurrency"], c["variant"], _f(c["j_per_request"]),
                _f(c["vs_baseline"], "{:+.1%}"), _f(c["quality"], "{:.3f}"), _f(c["e2e_p50_s"], "{:.3f}")]
               for c in result.comparison])
    if result.card_spread:
        doc.heading("Card-to-card spread (same variant, different GPUs)")
        doc.table(["variant", "in flight", "GPUs", "min J/request", "max J/request", "spread"],
                  [[s["variant"], s["concurrency"], s["lanes"], _f(s["min"]), _f(s["max"]),
                    _f(s["spread_rel"], "{:.1%}")] for s in result.card_spread])

    doc.heading("Changes against previous nights")
    doc.table(["series", "metric", "tonight", "nights before", "median before", "change", "noise (σ)"],
              [[h["series"], h["metric"], _f(h["tonight"]), h["nights_before"], _f(h["median_before"]),
                _f(h["change_rel"], "{:+.1%}"), _f(h["noise_rel"], "{:.1%}")] for h in result.against_history])
    if result.alarms:
        doc.bullets([a.describe() for a in result.alarms], "flag")
    else:
        doc.para(f"None detected ({', '.join(config.metrics)}; PELT penalty {config.detector.penalty}, "
                 f"≥ {config.detector.min_nights_after} nights on a new level, judged against the noise seen).")
    for metric in config.metrics:
        doc.image(trend_plot(history_rows, metric, result.alarms, out / f"trend-{metric}.png"), f"{metric} per night")
    return document.write(doc, out, "night")
