"""Reports rendered directly from typed runs (report/render.py); `bench report` keeps one CLI smoke test."""

import shutil

from harness.comparison import load_comparable, run_gate
from harness.finalize import open_run
from harness.report.render import compare_report, metric_rows, run_report
from tests.conftest import H200_RUNS


def test_run_report_from_a_recorded_run(tmp_path):
    run = open_run(H200_RUNS / "fp8-c1-r1")
    md, page = run_report(run, tmp_path / "out")
    text = md.read_text()
    assert "NVIDIA H200" in text and "| energy above idle |" in text and "mean power / idle power" in text
    assert page.read_text().count('src="data:image/png;base64,') == 4
    rows = dict((r[0], r[1]) for r in metric_rows(run.summary))
    assert rows["requests (ok / failed)"] == f"{run.summary.latency.ok} / {run.summary.latency.failed}"


def test_compare_report_uses_the_threshold_it_is_given(tmp_path, monkeypatch):
    """Issue 11: the energy-quality plot drew the gate at a hard-coded 80 %."""
    from harness.report import plots

    for name in ("bf16-c1-r1", "fp8-c1-r1"):
        shutil.copytree(H200_RUNS / name, tmp_path / name)
    runs, problems = load_comparable([tmp_path / "bf16-c1-r1", tmp_path / "fp8-c1-r1"])
    gates = {runs[1].run_id: run_gate(runs[0], runs[1], threshold=0.6)}
    drawn = {}
    real = plots.energy_vs_quality

    def spy(points, threshold_quality, path, **kwargs):
        drawn.update(threshold_quality=threshold_quality, **kwargs)
        return real(points, threshold_quality, path, **kwargs)

    monkeypatch.setattr(plots, "energy_vs_quality", spy)
    md, _ = compare_report(runs, gates, problems, tmp_path / "cmp", threshold=0.6)
    row = next(line for line in md.read_text().splitlines() if line.startswith("| fp8-c1-r1"))
    assert "| 0.60 |" in row
    base_q = runs[0].summary.quality.overall
    assert drawn["threshold"] == 0.6
    assert drawn["threshold_quality"] == (0.6 * base_q if base_q else None)
