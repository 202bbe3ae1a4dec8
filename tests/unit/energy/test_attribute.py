"""Attribution of energy to concurrent requests: the invariant over random schedules, and the
simple cases whose answers are obvious."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from harness.energy.attribute import PhaseWeights, Schedule, attribute
from harness.energy.integrate import PowerCurve, energy_between

S = 1_000_000_000


def flat(watts: float, seconds: float = 10.0) -> PowerCurve:
    t = np.arange(0, int(seconds * 100) + 1) * 10_000_000
    return PowerCurve(t.astype(np.int64), np.full(len(t), watts))


def test_one_request_gets_all_energy_in_its_span_and_gaps_stay_unattributed():
    c = flat(100.0)
    sched = Schedule.from_lists([2 * S], [3 * S], [5 * S])
    a = attribute(c, sched, (1 * S, 6 * S))
    assert a.prefill_j[0] == pytest.approx(100.0)
    assert a.decode_j[0] == pytest.approx(200.0)
    assert a.unattributed_j == pytest.approx(200.0)
    assert a.window_j == pytest.approx(500.0)


def test_two_overlapping_requests_split_equally_by_default():
    c = flat(100.0)
    sched = Schedule.from_lists([1 * S, 1 * S], [2 * S, 2 * S], [3 * S, 3 * S])
    a = attribute(c, sched, (1 * S, 3 * S))
    assert np.allclose(a.request_j, [100.0, 100.0])


def test_prefill_weight_shifts_energy_towards_the_request_in_prefill():
    c = flat(90.0)
    # A decodes over [0, 3]; B is in prefill over [1, 2] then decodes until 3.
    sched = Schedule.from_lists([0, 1 * S], [0, 2 * S], [3 * S, 3 * S])
    a = attribute(c, sched, (0, 3 * S), PhaseWeights(prefill=2.0, decode=1.0))
    # [1,2]: weights A=1, B=2 → B gets 60 J of 90; [2,3]: equal split.
    assert a.prefill_j[1] == pytest.approx(60.0)
    assert a.request_j[0] == pytest.approx(90.0 + 30.0 + 45.0)


def test_request_without_a_token_is_prefill_throughout():
    sched = Schedule.from_lists([1 * S], [None], [2 * S])
    a = attribute(flat(50.0), sched, (1 * S, 2 * S))
    assert a.prefill_j[0] == pytest.approx(50.0) and a.decode_j[0] == 0.0


@st.composite
def scenario(draw):
    n_samples = draw(st.integers(2, 60))
    gaps = draw(st.lists(st.integers(1, 50_000_000), min_size=n_samples - 1, max_size=n_samples - 1))
    t = np.concatenate(([0], np.cumsum(gaps))).astype(np.int64)
    p = np.asarray(draw(st.lists(st.floats(0, 1000), min_size=n_samples, max_size=n_samples)))
    end = int(t[-1])
    n_req = draw(st.integers(1, 25))
    starts, firsts, ends = [], [], []
    for _ in range(n_req):
        a, b, c = sorted(draw(st.lists(st.integers(0, end), min_size=3, max_size=3)))
        starts.append(a)
        firsts.append(None if draw(st.booleans()) and draw(st.booleans()) else b)
        ends.append(c)
    w0 = min(starts)
    w1 = max(max(ends), w0 + 1)
    weights = PhaseWeights(draw(st.floats(0.1, 10)), draw(st.floats(0.1, 10)))
    return PowerCurve(t, p), Schedule.from_lists(starts, firsts, ends), (w0, min(w1, end)), weights


@settings(max_examples=150, deadline=None)
@given(scenario())
def test_invariant_parts_add_up_to_the_integral(case):
    c, sched, window, weights = case
    assume(window[1] > window[0])  # a degenerate case is drawn again, not counted as a pass
    a = attribute(c, sched, window, weights)
    total = a.prefill_j.sum() + a.decode_j.sum() + a.unattributed_j
    integral = energy_between(c, *window)
    assert total == pytest.approx(integral, rel=1e-9, abs=1e-9)
    assert a.window_j == pytest.approx(integral, rel=1e-9, abs=1e-9)
    assert (a.prefill_j >= -1e-9).all() and (a.decode_j >= -1e-9).all()
