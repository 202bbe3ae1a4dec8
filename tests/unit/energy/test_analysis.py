"""Run-level energy analysis on synthetic traces with known answers: idle baseline, above-idle
energy, resume gaps, validity flags."""

import numpy as np
import pandas as pd
import pytest

from harness.energy.analysis import EnergyWindow, analyse

S = 1_000_000_000


def trace(seconds=20.0, watts=lambda t: 300.0, rate=100, counter_scale=1.0, **extra):
    t = np.arange(0, int(seconds * rate) + 1) * (S // rate)
    p = np.array([watts(x / S) for x in t])
    energy_mj = np.concatenate(([0.0], np.cumsum((p[1:] + p[:-1]) / 2 * np.diff(t) / 1e6))) * counter_scale
    frame = pd.DataFrame({"t_ns": t, "gpu": 0, "power_w": p, "energy_mj": energy_mj,
                          "temperature_c": np.nan, "sm_clock_mhz": np.nan, "throttle_reasons": np.nan})
    for column, values in extra.items():
        frame[column] = values(t / S)
    return frame


def requests(spans):
    return pd.DataFrame({"start_ns": [int(a * S) for a, _ in spans], "end_ns": [int(b * S) for _, b in spans],
                         "first_token_ns": [int((a + 0.1) * S) for a, _ in spans], "status": "ok",
                         "completion_tokens": 10})


def test_idle_baseline_and_energy_above_idle():
    power = trace(watts=lambda t: 100.0 if t < 5 else 300.0)
    out, summary = analyse(power, requests([(6, 8), (8, 10)]), idle=EnergyWindow(1 * S, 4 * S))
    assert summary.idle_power_w == pytest.approx(100.0)
    assert summary.total_j == pytest.approx(1200.0) and summary.above_idle_j == pytest.approx(800.0)
    assert out["energy_j"].tolist() == pytest.approx([600.0, 600.0])
    assert out["energy_above_idle_j"].tolist() == pytest.approx([400.0, 400.0])
    assert out["j_per_output_token"].tolist() == pytest.approx([60.0, 60.0])
    assert summary.flags == []


def test_resume_gap_is_left_out_and_flagged():
    power = trace()
    _, summary = analyse(power, requests([(1, 3), (10, 12)]), idle=None, gaps=[EnergyWindow(3 * S, 10 * S)])
    assert summary.total_j == pytest.approx(1200.0) and summary.window_s == pytest.approx(4.0)
    assert summary.attributed_j + summary.unattributed_j == pytest.approx(1200.0)
    assert any(f.startswith("resumed: 1 gap") for f in summary.flags)


def test_validity_flags():
    power = trace(counter_scale=1.1, temperature_c=lambda t: 40 + 2 * t,
                  throttle_reasons=lambda t: np.where(t > 5, 0x20, 0x1))
    _, summary = analyse(power, requests([(2, 14)]), idle=None, power_limit_w=250.0)
    codes = {f.split(":")[0] for f in summary.flags}
    assert codes == {"counter_mismatch", "above_limit", "temperature_excursion", "throttled"}
    assert "sw_thermal" in next(f for f in summary.flags if f.startswith("throttled"))


def test_short_window_is_flagged_against_the_sensor_period():
    power = trace(watts=lambda t: 300.0 + 10 * (int(t * 10) % 2))  # sensor updates every 100 ms
    _, summary = analyse(power, requests([(2.0, 2.5)]), idle=None)
    assert summary.sensor_period_s == pytest.approx(0.1)
    assert any(f.startswith("short_window") for f in summary.flags)


def test_trace_that_stops_short_is_reported_not_guessed():
    power = trace(seconds=5)
    out, summary = analyse(power, requests([(1, 9)]), idle=None)
    assert not summary.available and "does not cover" in summary.unavailable_reason
