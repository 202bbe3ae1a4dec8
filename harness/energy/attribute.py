"""Splitting measured energy among concurrent requests. Pure functions, no I/O.

At every instant the curve's power is divided among the requests in flight in proportion to
their weights; a request weighs `prefill` from its start until its first token and `decode`
from then until its end (a request that never produced a token is in prefill throughout).

Why these weights. Under continuous batching every in-flight request takes a slot in every
engine step and holds its KV cache, and a decode step's cost is dominated by streaming the
weights, which all requests share; so by default both phases weigh 1 (an equal split of the
instant's power among requests in flight). Prefill of an image prompt is compute-heavy, so a
team that has measured it (e.g. from a one-at-a-time run: mean power above idle during prefill
vs decode, see benchmarks/RESULTS.md) can raise the prefill weight with `--prefill-weight`.
The split changes who gets the joules, never how many: the sum is the measured integral.

Time with no request in flight is not attributed to anyone: it is reported as `unattributed`
(idle gaps between requests, scheduler pauses), so that

    Σ request prefill J + Σ request decode J + unattributed J == ∫ power over the window

to floating-point precision -- the invariant the tests check over random schedules.

Algorithm: split the window at every sample time and request event; within one segment the
power is linear and the set of weights constant, so the segment's energy is exact (trapezoid)
and its energy per unit weight u_i = E_i / W_i. A request's share over a phase is its weight
times the sum of u_i over the phase's segments -- a difference of prefix sums, O((S + R) log).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from harness.energy.integrate import PowerCurve


@dataclass(frozen=True)
class PhaseWeights:
    prefill: float = 1.0
    decode: float = 1.0

    def __post_init__(self) -> None:
        if not (0 < self.prefill < math.inf and 0 < self.decode < math.inf):  # NaN fails this too
            raise ValueError("phase weights must be positive and finite")


@dataclass(frozen=True)
class Schedule:
    """Request timings on the monotonic clock: start, first token (≤ 0 / NaN: none), end."""

    start_ns: np.ndarray
    first_token_ns: np.ndarray
    end_ns: np.ndarray

    @classmethod
    def from_lists(cls, start: list[int], first_token: list[int | None], end: list[int]) -> Schedule:
        ft = [e if f is None else f for f, e in zip(first_token, end, strict=True)]  # no token: prefill throughout
        return cls(np.asarray(start, np.int64), np.asarray(ft, np.int64), np.asarray(end, np.int64))

    def __len__(self) -> int:
        return len(self.start_ns)


@dataclass(frozen=True)
class Attribution:
    prefill_j: np.ndarray
    decode_j: np.ndarray
    unattributed_j: float
    window_j: float  # the integral the parts add up to

    @property
    def request_j(self) -> np.ndarray:
        return self.prefill_j + self.decode_j

    def scaled(self, factor: float, less_unattributed_j: float = 0.0) -> Attribution:
        """Every share times `factor`; `less_unattributed_j` (unscaled) is taken out of the
        unattributed part and the window first (stretches left out of the run)."""
        return Attribution(self.prefill_j * factor, self.decode_j * factor,
                           (self.unattributed_j - less_unattributed_j) * factor,
                           (self.window_j - less_unattributed_j) * factor)


def attribute(curve: PowerCurve, schedule: Schedule, window: tuple[int, int],
              weights: PhaseWeights = PhaseWeights()) -> Attribution:
    w0, w1 = window
    if w1 <= w0:
        raise ValueError("empty window")
    if not curve.covers(w0, w1):
        raise ValueError("power trace does not cover the window")
    # Clip phases to the window; a phase outside it gets nothing.
    start = np.clip(schedule.start_ns, w0, w1)
    end = np.clip(np.maximum(schedule.end_ns, schedule.start_ns), w0, w1)
    first = np.clip(schedule.first_token_ns, start, end)

    inner = curve.t_ns[(curve.t_ns > w0) & (curve.t_ns < w1)]
    cuts = np.unique(np.concatenate(([w0, w1], inner, start, first, end)).astype(np.int64))
    p = curve.at(cuts)
    seg_j = (p[1:] + p[:-1]) * 0.5 * np.diff(cuts) / 1e9

    # Total weight per segment: +w at a phase's start cut, -w at its end cut, cumulative sum.
    idx = {name: np.searchsorted(cuts, arr) for name, arr in (("s", start), ("f", first), ("e", end))}
    delta = np.zeros(len(cuts))
    np.add.at(delta, idx["s"], weights.prefill)
    np.add.at(delta, idx["f"], weights.decode - weights.prefill)
    np.add.at(delta, idx["e"], -weights.decode)
    seg_weight = np.cumsum(delta)[:-1]
    # Round-off in the cumulative sum can leave ±1e-15 where nothing is in flight.
    busy = seg_weight > 1e-9 * max(weights.prefill, weights.decode)
    per_weight = np.zeros_like(seg_j)
    per_weight[busy] = seg_j[busy] / seg_weight[busy]
    prefix = np.concatenate(([0.0], np.cumsum(per_weight)))

    prefill_j = weights.prefill * (prefix[idx["f"]] - prefix[idx["s"]])
    decode_j = weights.decode * (prefix[idx["e"]] - prefix[idx["f"]])
    unattributed = float(np.sum(seg_j[~busy]))
    return Attribution(prefill_j, decode_j, unattributed, float(np.sum(seg_j)))
