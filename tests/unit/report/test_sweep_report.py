"""The sweep report rendered directly from recorded runs (two levels of the H200 fixtures); the
`bench run --concurrency 1,2` smoke test is in tests/integration/test_load_cli.py."""

from harness.finalize import open_run
from harness.report import plots
from harness.report.sweep_report import (
    SweepLevel,
    level_axis,
    read_index,
    sweep_point,
    sweep_report,
    table_rows,
    write_index,
)
from tests.conftest import H200_RUNS


def _points():
    return [sweep_point(open_run(H200_RUNS / name), label, caches)
            for name, label, caches in (("bf16-c1-r1", "c1", "fresh server"), ("bf16-c16-r1", "c16", "reset"))]


def test_points_carry_the_runs_own_figures_and_intervals_around_them():
    c1, c16 = _points()
    run = open_run(H200_RUNS / "bf16-c16-r1").summary
    assert c16.concurrency == 16 and c16.j_per_request == run.energy.j_per_request_mean
    assert c16.above_idle_j_per_request == run.energy.above_idle_j_per_request_mean
    assert c16.e2e_s == run.latency.e2e_s and c16.requests_per_s == run.latency.requests_per_s
    for p in (c1, c16):
        assert p.j_low < p.j_per_request < p.j_high
        assert p.above_idle_low < p.above_idle_j_per_request < p.above_idle_high
    assert c1.j_per_request > c16.j_per_request  # batching shares the GPU's power: fewer J per request
    assert level_axis([c1, c16]) == ([1.0, 16.0], "requests in flight (concurrency)", True)
    rows = table_rows([c1, c16])
    assert rows[0][0] == "c1" and "[" in rows[0][2] and rows[1][9] == "reset"


def test_report_draws_every_curve_and_the_tradeoff(tmp_path):
    md, page = sweep_report(_points(), tmp_path / "out", "bf16")
    text = md.read_text()
    for name in ("sweep_energy.png", "sweep_tradeoff.png", "sweep_requests.png", "sweep_tokens.png",
                 "sweep_latency.png"):
        assert f"]({name})" in text and (tmp_path / "out" / name).stat().st_size > 5000
    assert page.read_text().count('src="data:image/png;base64,') == 5
    assert "| c16 |" in text and "above idle J/request" in text


def test_curves_skip_what_is_unknown_and_say_so(tmp_path):
    assert plots.level_curves([1, 4], [("total", [None, None], None, None)], xlabel="c", ylabel="J", title="t",
                              path=tmp_path / "a.png") is None
    drawn = plots.level_curves([1, 4], [("total", [2.0, None], [1.0, None], [3.0, None])], xlabel="c",
                               ylabel="J", title="t", path=tmp_path / "b.png", log_x=True)
    assert drawn is not None and drawn.exists()
    assert plots.energy_latency_tradeoff([{"label": "c1", "j_per_request": None, "e2e_p50_s": 1.0}],
                                         tmp_path / "c.png") is None


def test_the_index_keeps_levels_beside_it_relative(tmp_path):
    (tmp_path / "s-c1").mkdir()
    write_index(tmp_path / "s-sweep", [SweepLevel("c1", tmp_path / "s-c1", "fresh server")])
    assert '"../s-c1"' in (tmp_path / "s-sweep" / "sweep.json").read_text()
    assert read_index(tmp_path / "s-sweep") == [SweepLevel("c1", (tmp_path / "s-c1").resolve(), "fresh server")]
