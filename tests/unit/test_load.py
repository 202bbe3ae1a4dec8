"""Load shapes: arrival processes, cycling, sweeps, pacing, client saturation."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from harness.errors import ConfigError
from harness.load import (
    LagMonitor,
    LoadSpec,
    Pacer,
    arrival_offsets_s,
    client_load,
    cycled,
    level_name,
    parse_levels,
    sweep_specs,
)
from tests.timing import SCHEDULING_SLACK_S


@pytest.mark.parametrize("burstiness", [0.5, 1.0, 4.0])
def test_arrivals_have_the_asked_rate_and_burstiness(burstiness):
    offsets = arrival_offsets_s(20_000, rate=50.0, burstiness=burstiness, seed=3)
    gaps = np.diff(offsets)
    assert offsets[0] == 0 and np.all(gaps >= 0)
    assert gaps.mean() == pytest.approx(1 / 50, rel=0.03)
    # gamma with shape k: coefficient of variation 1/sqrt(k) (Poisson: 1)
    assert gaps.std() / gaps.mean() == pytest.approx(1 / np.sqrt(burstiness), rel=0.05)


def test_arrivals_are_seeded_and_closed_loop_sends_at_once():
    assert np.array_equal(arrival_offsets_s(50, 3.0, 1.0, seed=1), arrival_offsets_s(50, 3.0, 1.0, seed=1))
    assert not np.array_equal(arrival_offsets_s(50, 3.0, 1.0, seed=1), arrival_offsets_s(50, 3.0, 1.0, seed=2))
    assert not arrival_offsets_s(5, None).any() and len(arrival_offsets_s(0, 2.0)) == 0


def test_max_requests_cycles_the_suite_independently_of_samples():
    assert cycled(3, 7) == [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1), (0, 2)]
    assert cycled(3, 2, samples=5) == [(0, 0), (1, 0)]
    assert len(cycled(3, None, samples=2)) == 6 and cycled(0, 5) == []


def test_levels_and_sweeps():
    assert parse_levels("1,4, 16,64") == (1, 4, 16, 64)
    for bad in ("", "a,b", "0,4", "nan", "-1"):
        with pytest.raises(ConfigError):
            parse_levels(bad)
    specs = sweep_specs(LoadSpec(request_rate=2.0), concurrency=(1, 4, 16))
    assert [s.concurrency for s in specs] == [1, 4, 16] and all(s.request_rate == 2.0 for s in specs)
    assert [level_name(s) for s in specs] == ["c1-r2", "c4-r2", "c16-r2"]
    assert [s.request_rate for s in sweep_specs(LoadSpec(concurrency=8), rates=(1, 2))] == [1, 2]
    with pytest.raises(ConfigError, match="not both"):
        sweep_specs(LoadSpec(), concurrency=(1, 2), rates=(1, 2))
    for bad in ({"concurrency": 0}, {"request_rate": 0.0}, {"request_rate": float("inf")}, {"burstiness": 0},
                {"duration_s": -1.0}, {"max_requests": 0}):
        with pytest.raises(ConfigError):
            LoadSpec(**bad)


class VirtualClock:
    """The pacer's clock and sleep on virtual time: each sleep wakes `late_ns(i)` after it was due
    (a busy machine's late timer, chosen per wake-up)."""

    def __init__(self, late_ns=lambda i: 0):
        self.now_ns, self.late_ns, self.sleeps_s = 10**12, late_ns, []

    def __call__(self) -> int:
        return self.now_ns

    async def sleep(self, seconds: float) -> None:
        self.now_ns += round(seconds * 1e9) + self.late_ns(len(self.sleeps_s))
        self.sleeps_s.append(seconds)


def paced(spec: LoadSpec, clock: VirtualClock, n: int = 100) -> tuple[Pacer, list[int]]:
    """Send times (virtual ns) of every request the pacer lets go."""
    pacer = Pacer(spec, n, clock_ns=clock, sleep=clock.sleep)

    async def go() -> list[int]:
        sent = []
        for i in range(n):
            if not await pacer.wait_turn(i):
                break
            sent.append(clock())
        return sent

    return pacer, asyncio.run(go())


def test_pacer_sends_each_request_at_its_time_and_stops_at_the_duration():
    spec = LoadSpec(request_rate=100.0, burstiness=4.0, duration_s=0.25, seed=1)
    clock = VirtualClock()
    pacer, sent = paced(spec, clock)
    due = [pacer.due_ns(i) for i in range(len(sent))]
    assert sent == due and len(sent) == int(np.sum(pacer.offsets_ns < 0.25e9)) >= 15
    assert pacer.due_ns(len(sent)) >= pacer.end_ns  # the first request not sent was due after the end
    # Without a rate every request is due at once: none sleeps, and the duration still ends the phase.
    clock = VirtualClock()
    _, sent = paced(LoadSpec(concurrency=4), clock, n=10)
    assert sent == [clock.now_ns] * 10 and clock.sleeps_s == []


def test_a_late_timer_delays_its_own_requests_and_not_the_schedule():
    spec = LoadSpec(request_rate=100.0, seed=2)
    stall_ns = 45_000_000
    clock = VirtualClock(late_ns=lambda i: stall_ns if i == 3 else 0)  # the 4th wake-up comes 45 ms late
    pacer, sent = paced(spec, clock, n=40)
    woke = pacer.due_ns(4) + stall_ns  # request 4's wake-up (request 0 never sleeps) is the late one
    caught = [i for i in range(5, 40) if pacer.due_ns(i) < woke]
    assert len(caught) >= 2 and len(sent) == 40  # the stall holds up later requests too
    for i, t in enumerate(sent):
        # Requests due during the stall go at once when it ends; every later one exactly on time.
        assert t == (max(pacer.due_ns(i), woke) if i >= 4 else pacer.due_ns(i)), i


def test_a_wake_up_past_the_duration_sends_nothing():
    spec = LoadSpec(request_rate=10.0, duration_s=1.0, seed=0)
    clock = VirtualClock(late_ns=lambda i: 2 * 10**9)  # the first sleep overshoots the whole phase
    pacer, sent = paced(spec, clock, n=20)
    assert len(sent) == 1 and len(clock.sleeps_s) == 1 and clock() > pacer.end_ns


def test_pacer_on_the_real_event_loop_is_never_early():
    # No duration: a stalled event loop must not cut the phase short (the duration's arithmetic is pinned
    # on the virtual clock above); 30 arrivals at 200/s, the last due at 0.19 s.
    spec = LoadSpec(request_rate=200.0, seed=1)

    async def go():
        pacer = Pacer(spec, 30)
        late_ms = []
        for i in range(30):
            if not await pacer.wait_turn(i):
                break
            late_ms.append((time.monotonic_ns() - pacer.due_ns(i)) / 1e6)
        return late_ms

    late_ms = asyncio.run(go())
    # Never early (asyncio's timers may fire a clock tick early), and each within the machine's allowance
    # of its time. How late beyond that is the machine's business: every run records its event-loop lag
    # (manifest client_load) and flags a saturated client.
    assert len(late_ms) == 30 and min(late_ms) > -0.01
    assert max(late_ms) < SCHEDULING_SLACK_S * 1e3


def test_client_load_flags_saturation():
    calm = client_load([100_000] * 99 + [1_000_000], cpu_s=0.2, wall_s=1.0)
    assert not calm.saturated and calm.lag_max_ms == 1.0
    assert client_load([20_000_000] * 10, 0.1, 1.0).saturated  # 20 ms late timers
    assert client_load([0] * 10, 0.95, 1.0).saturated  # a full core
    assert calm.to_dict()["cpu_share"] == 0.2


def test_lag_monitor_sees_a_blocked_loop():
    async def go():
        async with LagMonitor(period_s=0.005) as lag:
            await asyncio.sleep(0.03)
            time.sleep(0.05)  # the client blocking its own loop
            await asyncio.sleep(0.02)
        return lag.result()

    load = asyncio.run(go())
    assert load.lag_max_ms >= 40 and load.wall_s >= 0.1

