"""Power traces as curves, and energy over windows. Pure functions over numpy arrays.

Power model: the curve through the raw samples, linear between consecutive samples. A sensor
that updates more slowly than we sample repeats its reading; consecutive repeats make a flat
stretch, so a held measurement stays held (no slope is drawn across a flat stretch, unlike a
fit through de-duplicated points), and a change of value is spread over one sampling interval
-- the uncertainty about when the sensor updated. At window edges the curve is interpolated,
so a window shorter than a sensor period still gets power x duration rather than 0 J.

Times are integer nanoseconds of one monotonic clock; energies in joules; power in watts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PowerCurve:
    """Total power of the measured GPUs over time (summed across GPUs)."""

    t_ns: np.ndarray  # int64, strictly increasing
    power_w: np.ndarray  # float64

    def __post_init__(self) -> None:
        if self.t_ns.shape != self.power_w.shape or self.t_ns.ndim != 1:
            raise ValueError("t_ns and power_w must be 1-D arrays of equal length")
        if len(self.t_ns) and np.any(np.diff(self.t_ns) <= 0):
            raise ValueError("t_ns must be strictly increasing")

    @property
    def start_ns(self) -> int:
        return int(self.t_ns[0])

    @property
    def end_ns(self) -> int:
        return int(self.t_ns[-1])

    def covers(self, start_ns: int, end_ns: int) -> bool:
        return len(self.t_ns) >= 2 and self.start_ns <= start_ns and end_ns <= self.end_ns

    def at(self, t_ns: np.ndarray | int) -> np.ndarray:
        return np.interp(np.asarray(t_ns, dtype=np.float64), self.t_ns.astype(np.float64), self.power_w)

    def shifted(self, offset_w: float) -> PowerCurve:
        return PowerCurve(self.t_ns, self.power_w - offset_w)


def combine_gpus(t_ns: np.ndarray, gpu: np.ndarray, power_w: np.ndarray) -> PowerCurve:
    """Sum per-GPU samples into one curve. GPUs read at different instants are each
    interpolated onto the union of timestamps (held flat beyond their own first/last sample)."""
    t_ns = np.asarray(t_ns, dtype=np.int64)
    gpu = np.asarray(gpu)
    power_w = np.asarray(power_w, dtype=np.float64)
    grid = np.unique(t_ns)
    total = np.zeros(len(grid))
    for g in np.unique(gpu):
        mask = gpu == g
        order = np.argsort(t_ns[mask], kind="stable")
        tg, pg = t_ns[mask][order], power_w[mask][order]
        keep = np.concatenate(([True], np.diff(tg) > 0))  # a duplicated timestamp: keep the first
        total += np.interp(grid.astype(np.float64), tg[keep].astype(np.float64), pg[keep])
    return PowerCurve(grid, total)


def energy_between(curve: PowerCurve, start_ns: int, end_ns: int) -> float:
    """Trapezoid integral of the curve over [start_ns, end_ns], interpolated at both edges."""
    if end_ns < start_ns:
        raise ValueError("window ends before it starts")
    if not curve.covers(start_ns, end_ns):
        raise ValueError("power trace does not cover the window")
    inside = curve.t_ns[(curve.t_ns > start_ns) & (curve.t_ns < end_ns)]
    t = np.concatenate(([start_ns], inside, [end_ns])).astype(np.int64)
    p = curve.at(t)
    return float(np.sum((p[1:] + p[:-1]) * 0.5 * np.diff(t)) / 1e9)


def counter_delta_j(t_ns: np.ndarray, energy_mj: np.ndarray, start_ns: int, end_ns: int,
                    curve: PowerCurve | None = None) -> float:
    """Energy from a cumulative hardware counter (mJ) over a window.

    Reading the counter is costly on some systems (~4 ms of CPU per call seen on an H200 VM),
    so it may be read far less often than power. With `curve`, the counter is taken at the last
    reading at or before the window start and the first at or after its end, and the power
    integral over those two edge stretches is subtracted: the counter carries the total, the
    sampled power only the edges. Without `curve`, the counter is interpolated linearly."""
    t = np.asarray(t_ns, dtype=np.int64)
    e = np.asarray(energy_mj, dtype=np.float64)
    if len(t) < 2 or start_ns < t[0] or end_ns > t[-1]:
        raise ValueError("energy counter readings do not cover the window")
    if curve is None:
        e0, e1 = np.interp([start_ns, end_ns], t.astype(np.float64), e)
        return float(e1 - e0) / 1000.0
    i0 = int(np.searchsorted(t, start_ns, side="right")) - 1
    i1 = int(np.searchsorted(t, end_ns, side="left"))
    edges = energy_between(curve, int(t[i0]), start_ns) + energy_between(curve, end_ns, int(t[i1]))
    return float(e[i1] - e[i0]) / 1000.0 - edges


def counter_delta_all_gpus(t_ns: np.ndarray, gpu: np.ndarray, energy_mj: np.ndarray,
                           start_ns: int, end_ns: int, curves: dict | None = None) -> float:
    """Sum over GPUs of each GPU's counter delta (`curves`: each GPU's own power curve)."""
    total = 0.0
    for g in np.unique(gpu):
        mask = (gpu == g) & ~np.isnan(energy_mj)
        total += counter_delta_j(t_ns[mask], energy_mj[mask], start_ns, end_ns,
                                 curves.get(g) if curves else None)
    return total


def distinct_update_period_s(t_ns: np.ndarray, power_w: np.ndarray) -> float | None:
    """The sensor's update period: median time between readings whose value changed.
    Repeated readings are the same measurement held, so they do not count as updates."""
    t = np.asarray(t_ns, dtype=np.int64)
    p = np.asarray(power_w, dtype=np.float64)
    if len(t) < 3:
        return None
    changed = np.flatnonzero(np.diff(p) != 0) + 1
    if len(changed) < 2:
        return None
    return float(np.median(np.diff(t[changed]))) / 1e9


def mean_sample_rate_hz(t_ns: np.ndarray) -> float | None:
    t = np.unique(np.asarray(t_ns, dtype=np.int64))
    if len(t) < 2:
        return None
    return (len(t) - 1) / ((t[-1] - t[0]) / 1e9)
