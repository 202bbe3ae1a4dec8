"""Measurement protocol: noise twins, the settle rule, the warm-up's rounds, and the checks on a run."""

import asyncio
import io

import numpy as np
import pandas as pd
from PIL import Image

from harness.energy.integrate import PowerCurve
from harness.energy.protocol_checks import (
    cache_hit_mask,
    cache_split,
    idle_drift_flags,
    stall_flags,
    steady_state_flags,
)
from harness.protocol import SettleRule, settled, warm_up, warmup_items
from harness.suite import SuiteItem


def _item(i: int, size=(64, 48), fmt="PNG", mode="RGB") -> SuiteItem:
    buf = io.BytesIO()
    Image.new(mode, size, color=(10 * i) % 255 if mode == "L" else ((10 * i) % 255, 0, 0)).save(buf, format=fmt)
    return SuiteItem(id=f"it-{i}", task="t", metric="exact_match", prompt=f"question {i}", references=("a",),
                     image_bytes=buf.getvalue(), image_mime=f"image/{fmt.lower()}")


def test_noise_twins_keep_shape_and_prompt_but_share_no_pixels():
    items = [_item(0), _item(1, size=(32, 20), fmt="JPEG"), _item(2, mode="L")]
    twins = warmup_items(items, 5, seed=3)
    assert len(twins) == 5
    for twin, item in zip(twins, items + items[:2], strict=True):
        with Image.open(io.BytesIO(twin.image_bytes)) as a, Image.open(io.BytesIO(item.image_bytes)) as b:
            assert a.size == b.size and a.format == b.format and a.mode == b.mode
            assert not np.array_equal(np.asarray(a), np.asarray(b))
        assert twin.prompt == item.prompt and twin.id != item.id and twin.references == ()
    # Two twins of the same item differ (each warm-up request is first-seen too), and seeds reproduce.
    assert twins[0].image_bytes != twins[3].image_bytes
    assert warmup_items(items, 5, seed=3) == twins


def test_settle_rule_needs_two_close_rounds():
    rule = SettleRule(tolerance=0.1, min_rounds=2)
    assert not settled([1.0], rule)
    assert not settled([12.0, 1.0], rule)
    assert settled([12.0, 1.0, 1.05], rule)
    assert not settled([1.0, 1.2], rule)


def test_warm_up_runs_rounds_at_concurrency_until_settled():
    latencies = iter([9.0] * 4 + [1.0] * 4 + [1.02] * 4 + [1.0] * 100)
    in_flight = peak = 0

    async def send(item):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.001)
        in_flight -= 1
        return True, next(latencies)

    report = asyncio.run(warm_up(send, [_item(i) for i in range(40)], concurrency=4))
    assert report.settled and report.rounds == 3 and report.requests == 12
    assert report.round_median_e2e_s == [9.0, 1.0, 1.02]
    assert peak == 4
    # One at a time: rounds still hold several requests, never more than one in flight.
    peak = 0
    latencies = iter([1.0] * 100)
    report = asyncio.run(warm_up(send, [_item(i) for i in range(40)], concurrency=1))
    assert peak == 1 and report.requests == 8 and report.settled


def test_warm_up_that_never_settles_says_so():
    values = iter(np.linspace(1, 20, 100))

    async def send(item):
        return True, float(next(values))

    report = asyncio.run(warm_up(send, [_item(i) for i in range(8)], concurrency=2))
    assert not report.settled and report.requests == 8


def _requests(n=40, ttft=0.2, e2e=1.0, cached=None, prompt=300):
    start = np.arange(n) * 1_000_000_000
    frame = pd.DataFrame({
        "start_ns": start, "first_token_ns": start + int(ttft * 1e9), "end_ns": start + int(e2e * 1e9),
        "ttft_s": ttft, "e2e_s": e2e, "prompt_tokens": prompt, "energy_j": 100.0, "energy_above_idle_j": 40.0,
    })
    frame["cached_tokens"] = pd.array([None] * n if cached is None else cached, dtype="Int64")
    return frame


def test_cache_split_separates_first_seen_from_hits():
    ok = _requests(cached=[0] * 30 + [288] * 10)
    ok.loc[30:, "energy_j"] = 60.0
    ok.loc[30:, "energy_above_idle_j"] = 10.0
    split = cache_split(ok)
    assert split.reported and split.first_seen_requests == 30 and split.cache_hit_requests == 10
    assert split.first_seen_j_per_request_mean == 100.0 and split.cache_hit_j_per_request_mean == 60.0
    assert split.first_seen_above_idle_j_per_request_mean == 40.0
    assert abs(split.cached_prompt_token_share - 2880 / 12000) < 1e-12
    # A few cached tokens (a shared template prefix) do not make a hit.
    assert not cache_hit_mask(_requests(cached=[16] * 40)).any()
    # Not reported at all: everything counts as first-seen, and the split says it does not know.
    unknown = cache_split(_requests())
    assert not unknown.reported and unknown.cache_hit_requests == 0 and cache_hit_mask(_requests()) is None


def test_stall_flag_needs_a_long_wait_at_near_idle_power():
    ok = _requests(n=40)
    ok.loc[:3, "first_token_ns"] = ok.loc[:3, "start_ns"] + 12_000_000_000
    ok.loc[:3, "ttft_s"] = 12.0
    t = np.arange(0, 60_000_000_000, 10_000_000)
    busy = np.where(t < 16_000_000_000, 120.0, 400.0)  # idle-level power while the first requests wait
    window = (0, int(ok["end_ns"].max()))
    flags = stall_flags(ok, PowerCurve(t, busy), idle_power_w=118.0, window=window)
    assert len(flags) == 1 and flags[0].startswith("stall: 4 request(s)")
    # The same waits at full power are queueing, not a stall.
    assert stall_flags(ok, PowerCurve(t, np.full_like(t, 400.0, dtype=float)), 118.0, window) == []
    # No power curve: no stall claim.
    assert stall_flags(ok, None, None, None) == []


def test_steady_state_flags_a_slow_head_after_the_ramp_up_and_passes_a_steady_run():
    rng = np.random.default_rng(0)
    steady = _requests(n=100)
    steady["e2e_s"] = rng.normal(1.0, 0.05, 100)
    assert steady_state_flags(steady, concurrency=4) == []
    # The ramp-up (the first `concurrency` requests prefill together) is not a steady-state failure ...
    ramp = steady.copy()
    ramp.loc[:3, "e2e_s"] = 1.5
    assert steady_state_flags(ramp, concurrency=4) == []
    # ... but a head that stays slow after it is, and so is one that is fast (a cache-warm start).
    for value in (13.0, 0.5):
        cold = steady.copy()
        cold.loc[:15, "e2e_s"] = value
        flags = steady_state_flags(cold, concurrency=4)
        assert len(flags) == 1 and flags[0].startswith("not_steady: after the first 4 request(s), the next 10")
    # A head just outside the band but within 15 % of the typical latency is noise.
    near = steady.copy()
    near.loc[4:13, "e2e_s"] = 1.1
    assert steady_state_flags(near, concurrency=4) == []


def test_idle_drift():
    assert idle_drift_flags(120.0, 123.0) == []
    assert idle_drift_flags(120.0, 140.0)[0].startswith("idle_drift: idle power after the run (140 W)")
    assert idle_drift_flags(None, 140.0) == []
