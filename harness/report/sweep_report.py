"""The sweep report (`bench run --concurrency 1,4,16,64`, or a list of rates): one point per level,
as curves — J/request (total and above idle, with their 95 % intervals), throughput, latency
percentiles — and the energy–latency trade-off. Built from the levels' stored runs only, so
`bench report RUN_ID-sweep` rebuilds it at any time (harness.sweep.report_sweep opens the runs).

A sweep folder (`RUN_ID-sweep/`) holds `sweep.json`: the levels in order, each with its run folder
(relative to the sweep folder) and what the server's caches were before it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.errors import ResultsError
from harness.history import row_from_run
from harness.report import plots
from harness.report.document import Document, write
from harness.report.render import fmt
from harness.results import Percentiles
from harness.store import RunData, output_dir, read_json, write_json

SWEEP_INDEX = "sweep.json"


@dataclass(frozen=True)
class SweepLevel:
    """One level of a sweep as the index stores it."""

    name: str  # c16, r2.5, c16-r2.5
    run_dir: Path
    caches: str  # "fresh server", "reset", or "NOT reset (…)"


def write_index(folder: Path, levels: list[SweepLevel]) -> Path:
    folder = output_dir(folder)
    path = folder / SWEEP_INDEX
    write_json(path, {"levels": [{"name": lv.name, "run_dir": _relative(lv.run_dir, folder), "caches": lv.caches}
                                 for lv in levels]})
    return path


def _relative(run_dir: Path, folder: Path) -> str:
    """Levels beside the sweep folder (the usual case) are stored as ../NAME, so the results folder can move."""
    run_dir = Path(run_dir).resolve()
    return f"../{run_dir.name}" if run_dir.parent == folder.resolve().parent else str(run_dir)


def read_index(folder: Path) -> list[SweepLevel]:
    data = read_json(Path(folder) / SWEEP_INDEX)
    try:
        return [SweepLevel(str(lv["name"]), (Path(folder) / lv["run_dir"]).resolve(), str(lv.get("caches", "")))
                for lv in data["levels"]]
    except (KeyError, TypeError):
        raise ResultsError(f"{Path(folder) / SWEEP_INDEX} does not list the sweep's levels") from None


def is_sweep(folder: Path) -> bool:
    return (Path(folder) / SWEEP_INDEX).is_file()


@dataclass(frozen=True)
class SweepPoint:
    """One level's figures. J/request figures and their intervals are the history's (harness.history:
    the headline requests, 95 % normal interval of the mean), so a sweep and a trend never disagree."""

    label: str
    concurrency: int | None
    request_rate: float | None
    run_id: str
    j_per_request: float | None
    j_low: float | None
    j_high: float | None
    above_idle_j_per_request: float | None
    above_idle_low: float | None
    above_idle_high: float | None
    requests_per_s: float | None
    output_tokens_per_s: float | None
    ttft_s: Percentiles
    itl_s: Percentiles
    e2e_s: Percentiles
    ok: int
    requests: int
    flags: tuple[str, ...]
    caches: str


def sweep_point(run: RunData, label: str, caches: str = "") -> SweepPoint:
    summary, settings = run.summary, run.manifest.run_settings()
    row = row_from_run(run)
    lat = summary.latency
    rate = settings.request_rate
    return SweepPoint(
        label=label, concurrency=settings.concurrency, request_rate=float(rate) if rate is not None else None,
        run_id=run.run_id, j_per_request=row.j_per_request, j_low=row.j_per_request_low, j_high=row.j_per_request_high,
        above_idle_j_per_request=row.above_idle_j_per_request, above_idle_low=row.above_idle_j_per_request_low,
        above_idle_high=row.above_idle_j_per_request_high, requests_per_s=lat.requests_per_s,
        output_tokens_per_s=lat.output_tokens_per_s, ttft_s=lat.ttft_s, itl_s=lat.itl_s, e2e_s=lat.e2e_s,
        ok=lat.ok, requests=lat.requests, flags=tuple(summary.all_flags), caches=caches)


def level_axis(points: list[SweepPoint]) -> tuple[list[float], str, bool]:
    """(x values, axis label, log axis?) — the request rate when the levels differ in rate, else the
    concurrency (on a log-2 axis when it spans a factor of 4 or more)."""
    rates = [p.request_rate for p in points]
    if len({r for r in rates if r is not None}) > 1 and all(r is not None for r in rates):
        return [float(r) for r in rates], "request rate (req/s)", False
    conc = [float(p.concurrency or 0) for p in points]
    return conc, "requests in flight (concurrency)", min(conc) > 0 and max(conc) / min(conc) >= 4


def table_rows(points: list[SweepPoint]) -> list[list[str]]:
    def ci(low, high) -> str:
        return "" if low is None or high is None else f" [{fmt(low)}, {fmt(high)}]"

    def ms(p: Percentiles) -> str:
        return " / ".join("n/a" if v is None else f"{v * 1e3:.1f}" for v in (p.p50, p.p90, p.p99))

    return [[p.label, f"{p.ok} / {p.requests}", fmt(p.j_per_request) + ci(p.j_low, p.j_high),
             fmt(p.above_idle_j_per_request) + ci(p.above_idle_low, p.above_idle_high),
             fmt(p.requests_per_s), fmt(p.output_tokens_per_s), ms(p.ttft_s), ms(p.itl_s), ms(p.e2e_s),
             p.caches, "; ".join(p.flags) or "none"] for p in points]


TABLE_HEADERS = ["level", "ok / requests", "J/request [95% CI]", "above idle J/request [95% CI]", "req/s",
                 "output tok/s", "TTFT p50/p90/p99 ms", "ITL p50/p90/p99 ms", "e2e p50/p90/p99 ms",
                 "caches before", "flags"]


def sweep_report(points: list[SweepPoint], out: Path, title: str = "Sweep") -> tuple[Path, Path]:
    """sweep.md and sweep.html with the table and the curves, written into `out`."""
    out = output_dir(out)
    doc = Document(f"Sweep report: {title}")
    doc.para("One run per level against one server start. Before every level after the first the server's "
             "caches were reset where it offers the routes ('caches before' says what happened), and each level "
             "ran its own warm-up (--warmup) at its own concurrency. J/request counts each run's headline "
             "requests; intervals are 95 % intervals of the mean.")
    doc.table(TABLE_HEADERS, table_rows(points))
    x, xlabel, log_x = level_axis(points)
    doc.heading("Energy")
    energy = plots.level_curves(
        x, [("total", [p.j_per_request for p in points], [p.j_low for p in points], [p.j_high for p in points]),
            ("above idle", [p.above_idle_j_per_request for p in points], [p.above_idle_low for p in points],
             [p.above_idle_high for p in points])],
        xlabel=xlabel, ylabel="energy per request (J)", title="Joules per request by level",
        path=out / "sweep_energy.png", log_x=log_x)
    if energy is None:
        doc.para("No energy curves: no level has energy numbers.", css="muted")
    doc.image(energy, "Joules per request by level")
    doc.image(plots.energy_latency_tradeoff(
        [{"label": p.label, "j_per_request": p.j_per_request, "e2e_p50_s": p.e2e_s.p50, "e2e_p99_s": p.e2e_s.p99}
         for p in points], out / "sweep_tradeoff.png"), "Energy-latency trade-off")
    doc.heading("Throughput")
    doc.image(plots.level_curves(x, [("requests/s", [p.requests_per_s for p in points], None, None)],
                                 xlabel=xlabel, ylabel="requests/s", title="Requests per second by level",
                                 path=out / "sweep_requests.png", log_x=log_x), "Requests per second by level")
    doc.image(plots.level_curves(x, [("output tokens/s", [p.output_tokens_per_s for p in points], None, None)],
                                 xlabel=xlabel, ylabel="output tokens/s", title="Output tokens per second by level",
                                 path=out / "sweep_tokens.png", log_x=log_x), "Output tokens per second by level")
    doc.heading("Latency")
    panels = [(name, {q: [getattr(getattr(p, attr), q) for p in points] for q in ("p50", "p90", "p99")})
              for name, attr in (("TTFT", "ttft_s"), ("ITL (per-request mean)", "itl_s"), ("end-to-end", "e2e_s"))]
    doc.image(plots.latency_by_level(x, panels, xlabel=xlabel, path=out / "sweep_latency.png", log_x=log_x),
              "Latency percentiles by level")
    doc.heading("Runs")
    doc.bullets([f"{p.label}: {p.run_id}" for p in points])
    return write(doc, out, "sweep")
