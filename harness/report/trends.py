"""Trends over nights, from history rows: the terminal table, per-metric plots with one panel per
series (nights with validity flags ringed in red, alarms as dashed lines at their first bad night) and
the history page."""

from __future__ import annotations

from pathlib import Path

from harness.history import METRICS, Alarm, RunRow, series, series_label
from harness.report import document
from harness.report.plots import pyplot, save_figure

Z95 = 1.959964
FLAG_COLOR = "#c00000"  # the ring around a night with validity flags


def _fmt(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def trend_rows(rows: list[RunRow], metric: str) -> list[list[str]]:
    """One line per run: night, run, series (named as in the plots and alarms), value [interval], status, flags."""
    column = METRICS[metric][0]
    out = []
    for r in rows:
        low, high = getattr(r, f"{column}_low", None), getattr(r, f"{column}_high", None)
        interval = f"[{_fmt(low)}, {_fmt(high)}]" if low is not None else ""
        flags = "; ".join(r.flag_list)
        out.append([r.night_id, r.run_id, series_label(r.comparable_key), _fmt(getattr(r, column)), interval,
                    r.status, (flags or (r.error or ""))[:80]])
    return out


TREND_HEADERS = ["night", "run", "series", "value", "95% CI", "status", "flags / error"]
TREND_WIDTHS = [12, 34, 28, 10, 24, 10, 0]


def trend_lines(rows: list[RunRow], metric: str) -> list[str]:
    """The trend table as fixed-width lines for a terminal."""
    return ["".join(f"{cell:<{w}}" for cell, w in zip(line, TREND_WIDTHS, strict=True)).rstrip()
            for line in [TREND_HEADERS, *trend_rows(rows, metric)]]


def trend_plot(rows: list[RunRow], metric: str, alarms: list[Alarm], path: Path) -> Path | None:
    by_series = series(rows, metric)
    if not by_series:
        return None
    nights = sorted({p.night_id for points in by_series.values() for p in points})
    position = {n: i for i, n in enumerate(nights)}
    # One panel per series (variant, concurrency, GPU), its own y scale: bf16 at 1 in flight (~240 J) and at
    # 16 (~30 J) on one axis would hide a 10 % step of the second.
    labels = sorted(by_series)
    fig, axes = pyplot().subplots(len(labels), 1, figsize=(9, 1.2 + 1.9 * len(labels)), sharex=True, squeeze=False)
    for ax, label in zip(axes[:, 0], labels, strict=True):
        points = by_series[label]
        x = [position[p.night_id] for p in points]
        y = [p.value for p in points]
        err = [Z95 * p.se if p.se is not None else 0.0 for p in points]
        ax.errorbar(x, y, yerr=err, marker="o", ms=4, lw=1, capsize=2, color="#1f77b4")
        flagged = [(xi, yi) for xi, yi, p in zip(x, y, points, strict=True) if p.flagged]
        if flagged:
            ax.scatter(*zip(*flagged, strict=True), s=110, facecolors="none", edgecolors=FLAG_COLOR, lw=1.5,
                       zorder=5, label="validity flags")
            ax.legend(fontsize=7, loc="best")
        for alarm in alarms:
            if alarm.series == label and alarm.metric == metric and alarm.change.first_bad_night in position:
                ax.axvline(position[alarm.change.first_bad_night] - 0.5, color="#555555", ls="--", lw=1)
        ax.set_title(label, fontsize=8, loc="left")
        ax.tick_params(axis="y", labelsize=7)
    bottom = axes[-1, 0]
    bottom.set_xticks(range(len(nights)))
    bottom.set_xticklabels(nights, rotation=45, ha="right", fontsize=7)
    fig.suptitle(f"{metric} per night (mean of the night's runs, 95% CI from the per-request spread)", fontsize=9)
    return save_figure(fig, path)


def history_page(rows: list[RunRow], metrics: list[str], alarms: list[Alarm], out_dir: Path,
                 title: str = "Nightly history") -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = document.Document(title)
    doc.para(f"{len(rows)} runs over {len({r.night_id for r in rows})} nights. Dashed line: first night of a "
             f"detected change; red ring: a night with validity flags.", "muted")
    if alarms:
        doc.heading("Changes detected")
        doc.bullets([a.describe() for a in alarms], "flag")
    for metric in metrics:
        doc.heading(metric)
        doc.image(trend_plot(rows, metric, alarms, out_dir / f"trend-{metric}.png"), f"{metric} per night")
        doc.table(TREND_HEADERS, trend_rows(rows, metric))
    return document.write(doc, out_dir, "history")
