"""Energy integration on synthetic traces whose integrals are known exactly."""

import numpy as np
import pytest

from harness.energy.integrate import (
    PowerCurve,
    combine_gpus,
    counter_delta_j,
    distinct_update_period_s,
    energy_between,
    mean_sample_rate_hz,
)

S = 1_000_000_000  # ns per second


def curve(times_s, watts) -> PowerCurve:
    return PowerCurve(np.asarray(np.round(np.asarray(times_s) * S), dtype=np.int64), np.asarray(watts, float))


def test_constant_power_integrates_to_power_times_time():
    c = curve(np.arange(0, 10.01, 0.01), np.full(1001, 250.0))
    assert energy_between(c, 1 * S, 9 * S) == pytest.approx(2000.0)


def test_linear_ramp_is_exact_with_interpolated_edges():
    t = np.arange(0, 11)  # 1 Hz, P = 100 + 10 t
    c = curve(t, 100 + 10.0 * t)
    # ∫_{2.5}^{7.25} (100 + 10 t) dt = 100*4.75 + 5*(7.25² - 2.5²)
    assert energy_between(c, int(2.5 * S), int(7.25 * S)) == pytest.approx(475 + 5 * (7.25**2 - 2.5**2))


def test_window_shorter_than_a_sample_gets_its_share_not_zero():
    c = curve([0.0, 0.1, 0.2], [300.0, 300.0, 300.0])
    assert energy_between(c, int(0.101 * S), int(0.104 * S)) == pytest.approx(300 * 0.003)


def test_held_readings_stay_flat_between_sensor_updates():
    # A 10 Hz sensor read at 100 Hz: 100 W for 0.5 s then 200 W; the jump spans one sample gap.
    t = np.arange(0, 101) / 100
    p = np.where(t < 0.5, 100.0, 200.0)
    c = curve(t, p)
    assert energy_between(c, 0, int(0.49 * S)) == pytest.approx(49.0)
    assert energy_between(c, int(0.5 * S), S) == pytest.approx(100.0)
    assert distinct_update_period_s(c.t_ns, c.power_w) is None  # one change only: period unknown


def test_sensor_period_is_measured_from_distinct_values():
    t = np.arange(0, 300) * 10_000_000  # 100 Hz polling
    p = np.repeat(np.arange(30.0), 10)  # value changes every 10th reading: 100 ms period
    assert distinct_update_period_s(t, p) == pytest.approx(0.1)
    assert mean_sample_rate_hz(t) == pytest.approx(100.0)


def test_window_outside_the_trace_is_refused():
    c = curve([0, 1, 2], [1, 1, 1])
    with pytest.raises(ValueError):
        energy_between(c, 0, 3 * S)


def test_counter_delta_interpolates_or_corrects_edges_with_power():
    t = np.arange(0, 11) * S
    c = PowerCurve(t, np.full(11, 200.0))
    energy_mj = np.arange(0, 11) * 200_000.0  # 200 W → 200 J per second
    assert counter_delta_j(t, energy_mj, int(1.5 * S), int(4.25 * S)) == pytest.approx(550.0)
    # Counter read only at 0, 5 and 10 s: edges corrected with the power integral.
    sparse = np.array([0, 5, 10])
    assert counter_delta_j(t[sparse], energy_mj[sparse], int(1.5 * S), int(7.0 * S), c) == pytest.approx(1100.0)


def test_gpus_sampled_at_different_instants_are_summed_on_a_common_grid():
    t = np.array([0, 2, 4, 1, 3, 5]) * S
    gpu = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([100.0, 100.0, 100.0, 50.0, 50.0, 50.0])
    combined = combine_gpus(t, gpu, p)
    assert np.allclose(combined.power_w, 150.0)
    assert energy_between(combined, 1 * S, 4 * S) == pytest.approx(450.0)
