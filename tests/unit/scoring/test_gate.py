"""The gate's verdicts on synthetic score tables whose bootstrap outcome is known."""

import numpy as np
import pandas as pd
import pytest

from harness.scoring.gate import FAIL, INCONCLUSIVE, PASS, gate, paired_items, verdict_for


def pairs(baseline, candidate, tasks=None):
    n = len(baseline)
    return pd.DataFrame({"task": tasks or ["t"] * n, "baseline": baseline, "candidate": candidate},
                        index=[f"i{k}" for k in range(n)])


def test_verdict_rule():
    assert verdict_for(0.81, 0.9, 0.8) == PASS
    assert verdict_for(0.5, 0.79, 0.8) == FAIL
    assert verdict_for(0.7, 0.9, 0.8) == INCONCLUSIVE


def test_identical_runs_pass_with_a_degenerate_interval():
    rng = np.random.default_rng(1)
    scores = rng.random(200)
    result = gate(pairs(scores, scores))
    assert result.verdict == PASS and result.overall.low == pytest.approx(1.0) == result.overall.high


def test_clear_pass_and_clear_fail_with_many_items():
    rng = np.random.default_rng(2)
    base = rng.integers(0, 2, 400).astype(float)
    keep = rng.random(400) < 0.95  # candidate keeps 95 % of the baseline's right answers
    assert gate(pairs(base, base * keep)).verdict == PASS
    half = rng.random(400) < 0.5  # candidate keeps half
    result = gate(pairs(base, base * half))
    assert result.verdict == FAIL and result.overall.high < 0.8


def test_few_noisy_items_are_inconclusive_with_an_estimate_of_items_needed():
    base = np.array([1, 1, 0, 1, 0, 1, 1, 0, 1, 1], float)
    cand = np.array([1, 0, 0, 1, 0, 1, 0, 0, 1, 1], float)  # ratio 5/7 ≈ 0.71
    result = gate(pairs(base, cand))
    assert result.verdict == INCONCLUSIVE
    assert result.overall.items_to_settle > 10


def test_zero_baseline_is_inconclusive_not_a_crash():
    result = gate(pairs(np.zeros(20), np.zeros(20)))
    assert result.verdict == INCONCLUSIVE and result.overall.ratio is None and "undefined" in result.overall.note


def test_bootstrap_is_seeded_and_per_task():
    rng = np.random.default_rng(3)
    base, cand = rng.random(60), rng.random(60)
    tasks = ["a"] * 30 + ["b"] * 30
    one, two = gate(pairs(base, cand, tasks), seed=7), gate(pairs(base, cand, tasks), seed=7)
    assert one == two and set(one.by_task) == {"a", "b"}


def test_items_are_paired_by_id_and_samples_averaged():
    b = pd.DataFrame({"item_id": ["x", "x", "y"], "task": ["t"] * 3, "score": [1.0, 0.0, 1.0]})
    c = pd.DataFrame({"item_id": ["y", "x", "z"], "task": ["t"] * 3, "score": [0.0, 1.0, 1.0]})
    p = paired_items(b, c)
    assert list(p.index) == ["x", "y"] and p.loc["x", "baseline"] == 0.5 and p.loc["y", "candidate"] == 0.0


def test_bad_threshold_is_refused():
    with pytest.raises(ValueError):
        gate(pairs(np.ones(3), np.ones(3)), threshold=1.5)


def test_too_few_items_give_no_interval_rather_than_nan():
    """Issue 10 item 14: a task with 2 items once gave [1.0, nan]."""
    result = gate(pairs(np.array([1.0, 0.0, 1, 1, 1, 1]), np.array([1.0, 1.0, 1, 1, 1, 1]), ["tiny"] * 2 + ["big"] * 4))
    tiny = result.by_task["tiny"]
    assert tiny.verdict == INCONCLUSIVE and tiny.low is None and tiny.high is None and "too few items" in tiny.note


def test_resamples_below_the_minimum_are_refused():
    with pytest.raises(ValueError, match="at least"):
        gate(pairs(np.ones(10), np.ones(10)), resamples=1)
