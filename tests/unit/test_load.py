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


def test_pacer_sends_on_schedule_and_stops_at_the_duration():
    spec = LoadSpec(request_rate=100.0, burstiness=4.0, duration_s=0.25, seed=1)

    async def go():
        pacer = Pacer(spec, 100)
        sent = []
        for i in range(100):
            if not await pacer.wait_turn(i):
                break
            sent.append((time.monotonic_ns() - pacer.due_ns(i)) / 1e6)
        return sent, pacer

    sent, pacer = asyncio.run(go())
    expected = int(np.sum(pacer.offsets_ns < 0.25e9))
    assert abs(len(sent) - expected) <= 1 and 15 <= len(sent) <= 40
    assert max(sent) < 20  # ms late at most, on a busy 2-core machine


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

