"""The change-point detector on synthetic series: steps alarm at their first night, noise and lone outliers do not."""

import numpy as np
import pytest

from harness.regression import DetectorSettings, NightPoint, detect, noise_sigma


def series(values, se=1.0):
    return [NightPoint(f"n{i:02d}", float(v), se, (f"run-{i}",)) for i, v in enumerate(values)]


def noisy(n, level=100.0, sigma=1.0, seed=0):
    return level + sigma * np.random.default_rng(seed).standard_normal(n)


def test_a_ten_percent_step_alarms_at_its_first_night_within_two_nights():
    values = np.concatenate([noisy(20), noisy(2, level=110.0, seed=1)])
    found = detect(series(values))
    assert found is not None and found.worse
    assert found.first_bad_night == "n20" and found.last_good_night == "n19"
    assert found.runs_before == ("run-19",) and found.runs_after == ("run-20",)
    assert found.ci_low_rel < found.change_rel < found.ci_high_rel and found.ci_low_rel > 0.05
    assert abs(found.change_rel - 0.10) < 0.03


def test_one_bad_night_is_not_yet_an_alarm():
    values = np.concatenate([noisy(20), [110.0]])
    assert detect(series(values)) is None


def test_stationary_noise_raises_nothing_over_many_nights():
    values = noisy(80, sigma=1.3, seed=3)
    alarms = {f.first_bad_night for t in range(10, 80) if (f := detect(series(values[: t + 1]))) and f.worse}
    assert alarms == set()


def test_a_lone_outlier_followed_by_a_normal_night_is_not_a_change():
    values = np.concatenate([noisy(20), [112.0], noisy(1, seed=5)])
    assert detect(series(values)) is None


def test_direction_depends_on_the_metric():
    drop = np.concatenate([noisy(20, level=0.5, sigma=0.005), noisy(3, level=0.4, sigma=0.005, seed=2)])
    quality = detect(series(drop, se=0.005), higher_is_worse=False)
    assert quality is not None and quality.worse and quality.first_bad_night == "n20"
    energy = detect(series(drop, se=0.005), higher_is_worse=True)
    assert energy is not None and not energy.worse  # fewer joules: an improvement, reported, no alarm


def test_noise_is_the_larger_of_night_to_night_and_within_run_spread():
    values = noisy(30, sigma=2.0, seed=7)
    assert noise_sigma(values, [0.1] * 30) == pytest.approx(2.0, rel=0.4)
    assert noise_sigma(values, [5.0] * 30) == 5.0  # a run's own spread dominates a quiet history


def test_old_changes_are_history_not_news():
    values = np.concatenate([noisy(20), noisy(12, level=110.0, seed=1)])
    assert detect(series(values), DetectorSettings(recent_nights=7)) is None


def test_settings_are_checked():
    with pytest.raises(ValueError):
        DetectorSettings(penalty=0)
    with pytest.raises(ValueError):
        DetectorSettings(min_nights_after=3, recent_nights=2)
