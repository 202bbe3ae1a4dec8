"""The final lines of `bench run` (report/text.summary_lines with the run's history row) from a recorded run."""

from harness.finalize import open_run
from harness.history import row_from_run
from harness.report.text import summary_lines
from tests.conftest import H200_RUNS


def test_final_lines_give_rates_j_per_request_and_quality_with_their_intervals():
    run = open_run(H200_RUNS / "bf16-c16-r1")
    row = row_from_run(run)
    lines = summary_lines(run.summary, run.dir, row)
    assert lines[0].startswith("run bf16-c16-r1: 168/168 ok") and "p99" in lines[0]
    assert lines[1] == (f"throughput: {run.summary.latency.requests_per_s:.2f} req/s, "
                        f"{run.summary.latency.output_tokens_per_s:.1f} output tokens/s")
    j = next(line for line in lines if line.startswith("J/request:"))
    assert f"{row.j_per_request:.3g} [95% CI {row.j_per_request_low:.3g}, {row.j_per_request_high:.3g}]" in j
    assert f"above idle {row.above_idle_j_per_request:.3g} [95% CI" in j
    assert next(line for line in lines if line.startswith("quality: ")).count("[95% CI") == 1
    assert lines[-1] == f"results: {run.dir}"
    plain = summary_lines(run.summary, run.dir)  # without the row (bench reanalyze): the figures, no intervals
    assert not any("95% CI" in line for line in plain) and any(line.startswith("J/request:") for line in plain)
