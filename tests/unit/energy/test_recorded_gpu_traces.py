"""Real power traces recorded by the harness on an NVIDIA H200 (2026-11-27, vLLM 0.23.0,
Gemma-4-E4B-shaped dummy-weight model, bf16 and FP8), replayed through the trace meter."""

import pandas as pd
import pytest

from harness.energy.analysis import analyse, run_window
from harness.energy.attribute import PhaseWeights, Schedule, attribute
from harness.energy.integrate import energy_between
from harness.energy.meters import TraceMeter
from harness.finalize import compute
from harness.records import RunClock
from harness.store import load_run
from tests.conftest import H200_RUNS

RUNS = sorted(p for p in H200_RUNS.iterdir() if p.is_dir())
# Recorded by `bench run --variant bf16 --dummy-weights --concurrency 8` itself, with the final meter
# (counter once a second and at stop, final reading at stop).
CLI_RUN = H200_RUNS.parent / "h200-20261127-cli" / "bf16-cli-c8"


def replay(run_dir):
    """The run's trace through the trace meter (as a team's external trace would come in)."""
    run = load_run(run_dir)
    meter = TraceMeter(run_dir / "power.parquet", RunClock(run.manifest.first_clock_offset_ns))
    meter.start()
    samples = pd.DataFrame([s.__dict__ for s in meter.stop()])
    return run, samples


def test_fixtures_are_small_and_present():
    assert len(RUNS) == 12
    assert all((r / "power.parquet").stat().st_size < 1_000_000 for r in RUNS)


@pytest.mark.parametrize("run_dir", [*RUNS, CLI_RUN], ids=lambda p: p.name)
def test_attribution_invariant_and_counter_agreement_on_real_traces(run_dir):
    run, samples = replay(run_dir)
    requests = run.requests
    _, summary = analyse(samples, requests, idle=None)
    # Σ per-request + unattributed equals the counter's total (the counter is authoritative).
    assert summary.attributed_j + summary.unattributed_j == pytest.approx(summary.counter_j, rel=1e-9)
    # The trapezoid integral of NVML_FI_DEV_POWER_INSTANT at 100 Hz agrees with the counter.
    assert abs(summary.counter_integral_rel_diff) < 0.02
    # Unscaled, the parts add up to the integral exactly.
    window = run_window(requests)
    from harness.energy.analysis import curve_from_samples, hold_edges
    curve = curve_from_samples(hold_edges(samples, window))
    sched = Schedule.from_lists(requests["start_ns"].tolist(),
                                [None if pd.isna(f) else int(f) for f in requests["first_token_ns"]],
                                requests["end_ns"].tolist())
    raw = attribute(curve, sched, (window.start_ns, window.end_ns), PhaseWeights())
    assert raw.request_j.sum() + raw.unattributed_j == pytest.approx(
        energy_between(curve, window.start_ns, window.end_ns), rel=1e-12)


def fresh(run_dir):
    """The run's summary computed now by the code (not the stored JSON)."""
    run = load_run(run_dir)
    return compute(run.manifest, run.requests.drop(columns=["retried"], errors="ignore"), run.power)


def test_fp8_spends_fewer_joules_per_request_than_bf16_one_at_a_time():
    per_request = {}
    for variant in ("bf16", "fp8"):
        values = [fresh(H200_RUNS / f"{variant}-c1-r{r}")[2].energy.j_per_request_mean for r in (1, 2)]
        per_request[variant] = sum(values) / len(values)
    assert per_request["fp8"] < 0.85 * per_request["bf16"]


def test_stored_summaries_match_a_fresh_reanalysis(tmp_path):
    import shutil

    from harness.finalize import finalize_run
    copy = tmp_path / "run"
    shutil.copytree(H200_RUNS / "bf16-c16-r1", copy)
    stored = load_run(copy).summary.energy
    again = finalize_run(copy).energy
    assert again.total_j == pytest.approx(stored.total_j)
    assert again.j_per_request_mean == pytest.approx(stored.j_per_request_mean)
    assert again.idle_power_w == pytest.approx(stored.idle_power_w)


@pytest.mark.parametrize("run_dir", [*RUNS, CLI_RUN], ids=lambda p: p.name)
def test_energy_identities_hold_on_every_recorded_run(run_dir):
    """Issue 10, items 9 and 10: Σ per-request + unattributed = the summary's total, for the
    total and for above-idle alike; the measured window is the same for throughput and energy."""
    requests, _, summary = fresh(run_dir)
    e = summary.energy
    assert requests["energy_j"].sum() + e.unattributed_j == pytest.approx(e.total_j, rel=1e-9)
    assert e.idle_power_w is not None
    assert requests["energy_above_idle_j"].sum() + e.unattributed_above_idle_j == pytest.approx(e.above_idle_j,
                                                                                                rel=1e-9)
    assert summary.latency.duration_s == pytest.approx(e.window_s, rel=1e-12)


def test_sparse_counter_with_power_corrected_edges_on_a_real_load_trace():
    """H200 under bursts of matrix products (0.7 s on, 0.5 s off), power at 100 Hz, the energy
    counter read once a second: the counter's total over arbitrary windows, edges corrected with
    the power integral, agrees with the integral of instantaneous power."""
    from harness.energy.analysis import curve_from_samples
    from harness.energy.integrate import counter_delta_j

    samples = pd.read_parquet(H200_RUNS.parent / "h200-load-trace.parquet")
    counter = samples.dropna(subset=["energy_mj"])
    assert 10 <= len(counter) <= 15 and samples["power_w"].max() > 2 * samples["power_w"].min()
    curve = curve_from_samples(samples)
    t0, t1 = int(samples["t_ns"].min()), int(samples["t_ns"].max())
    for start, end in [(t0 + 123_456_789, t1 - 987_654_321), (t0 + 2_500_000_000, t0 + 9_100_000_000)]:
        by_counter = counter_delta_j(counter["t_ns"].to_numpy(), counter["energy_mj"].to_numpy(), start, end, curve)
        assert by_counter == pytest.approx(energy_between(curve, start, end), rel=0.02)
