"""Regression alarms over a history of nights: change-point detection, pure (plain data in, plain data out).

Method: PELT (Killick, Fearnhead & Eckley 2012, "Optimal detection of changepoints with a linear
computational cost") as implemented by the maintained `ruptures` library (`ruptures.Pelt`, cost
model "l2" = a change in the mean). Chosen over E-Divisive means (Apache Otava pins numpy 2.2.* and
scipy < 1.17 and pulls BigQuery/Slack clients; MongoDB's signal-processing-algorithms pins numpy < 2
and Python ~3.11): ruptures installs cleanly next to the harness, and a mean-shift model with a
penalty expressed in units of the noise is exactly the question "did this night move by more than
the noise we see?".

The noise is the one actually seen, never a fixed percentage:
  sigma = max(night-to-night spread, within-run standard error)
  - night-to-night: a robust spread of successive differences over the window
    (1.4826 * median |y[i] - y[i-1]| / sqrt(2); one step changes one difference only, so a
    regression inside the window barely inflates it);
  - within-run: the median standard error of a night's value from the per-request spread
    (sd / sqrt(n) of the requests' joules, averaged over the night's repeats).
The series is standardised by sigma, so the PELT penalty is in units of sigma^2; a change point is
only an alarm when
  - it is the newest one, with at least `min_nights_after` nights after it (one bad night is an
    outlier -- a cold server, a hot room -- not a regression), and at most `recent_nights` old;
  - every night after it lies beyond the midpoint of the two levels (one outlier night followed
    by a normal one is not a new level);
  - the interval of the change (difference of segment means, +- z * sigma * sqrt(1/n_a + 1/n_b))
    excludes zero, and its size is at least `min_change_rel` (0 by default: noise decides);
  - it goes the bad way (more joules, lower quality); changes the good way are returned too, as
    information.
Parameters were calibrated on simulated histories at the noise seen in the recorded H200 runs:
`python benchmarks/regression_detector.py` (table in benchmarks/RESULTS.md)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

MAD_TO_SIGMA = 1.4826  # median absolute deviation of a normal sample -> its standard deviation


@dataclass(frozen=True)
class DetectorSettings:
    penalty: float = 20.0  # PELT penalty, in units of sigma^2 of the standardised series
    min_nights_after: int = 2  # a change needs this many nights on its new level before it alarms
    recent_nights: int = 7  # older change points are history, not news
    window_nights: int = 30  # nights looked at (the newest ones)
    min_history: int = 5  # nights before the first change point can be judged
    confidence: float = 0.95  # of the change's interval
    min_change_rel: float = 0.0  # smallest relative change worth an alarm (0: the noise decides)

    def __post_init__(self):
        if self.penalty <= 0:
            raise ValueError("penalty must be positive")
        if self.min_nights_after < 1 or self.recent_nights < self.min_nights_after:
            raise ValueError("need 1 <= min_nights_after <= recent_nights")
        if self.window_nights < self.min_history + self.min_nights_after:
            raise ValueError("window_nights must hold min_history + min_nights_after nights")
        if not 0 < self.confidence < 1:
            raise ValueError("confidence must be in (0, 1)")
        if self.min_change_rel < 0:
            raise ValueError("min_change_rel must be >= 0")


@dataclass(frozen=True)
class NightPoint:
    """One night's value of one series (a variant's metric on one GPU), oldest first."""

    night_id: str
    value: float
    se: float | None = None  # standard error of `value` from the per-request spread
    runs: tuple[str, ...] = ()  # run ids (or folders) behind the value
    flagged: bool = False  # a run of this night had validity flags


@dataclass(frozen=True)
class ChangePoint:
    first_bad_night: str  # first night on the new level
    last_good_night: str
    before: float  # mean of the segment before
    after: float  # mean of the segment after (up to the newest night)
    change_rel: float  # (after - before) / before
    ci_low_rel: float
    ci_high_rel: float
    noise_rel: float  # sigma / before: the noise the change was judged against
    nights_after: int
    worse: bool  # in the bad direction for this metric
    runs_before: tuple[str, ...]  # the runs to compare: the last good night's ...
    runs_after: tuple[str, ...]  # ... and the first bad night's

    def describe(self, series: str) -> str:
        kind = "REGRESSION" if self.worse else "improvement"
        return (f"{kind} {series}: {self.change_rel:+.1%} (CI {self.ci_low_rel:+.1%} .. {self.ci_high_rel:+.1%}, "
                f"noise {self.noise_rel:.1%}) from night {self.first_bad_night} "
                f"({self.before:.4g} -> {self.after:.4g}); compare {', '.join(self.runs_before) or '?'} "
                f"with {', '.join(self.runs_after) or '?'}")


def noise_sigma(values: Sequence[float], ses: Sequence[float | None]) -> float:
    """max(robust night-to-night spread, median within-run standard error), in the values' units."""
    y = np.asarray(values, dtype=float)
    night = MAD_TO_SIGMA * float(np.median(np.abs(np.diff(y)))) / math.sqrt(2) if len(y) >= 3 else 0.0
    known = [s for s in ses if s is not None and math.isfinite(s)]
    within = float(np.median(known)) if known else 0.0
    floor = 1e-9 * max(float(np.median(np.abs(y))), 1e-12)  # a constant series: any change is real
    return max(night, within, floor)


def change_points(standardised: np.ndarray, penalty: float, min_size: int) -> list[int]:
    """Indices where a new segment starts (PELT, l2 cost, every position a candidate)."""
    import ruptures  # pulls in scipy (seconds): only when a night is judged

    if len(standardised) < 2 * min_size:
        return []
    breaks = ruptures.Pelt(model="l2", min_size=min_size, jump=1).fit(standardised.reshape(-1, 1)).predict(pen=penalty)
    return [b for b in breaks if b < len(standardised)]


def detect(points: Sequence[NightPoint], settings: DetectorSettings = DetectorSettings(),
           higher_is_worse: bool = True) -> ChangePoint | None:
    """The newest significant change of the series as of its last night, or None."""
    window = [p for p in points if p.value is not None and math.isfinite(p.value)][-settings.window_nights:]
    if len(window) < settings.min_history + settings.min_nights_after:
        return None
    y = np.array([p.value for p in window], dtype=float)
    sigma = noise_sigma(y, [p.se for p in window])
    x = (y - np.median(y)) / sigma
    cps = change_points(x, settings.penalty, settings.min_nights_after)
    if not cps:
        return None
    cp = cps[-1]
    n = len(y)
    nights_after = n - cp
    if nights_after < settings.min_nights_after or nights_after > settings.recent_nights:
        return None
    start = cps[-2] if len(cps) > 1 else 0
    if cp - start < settings.min_history:
        start = max(0, cp - settings.min_history)  # a short previous segment: take the nights just before
    before, after = float(y[start:cp].mean()), float(y[cp:].mean())
    if before == 0:
        return None
    z = NormalDist().inv_cdf(0.5 + settings.confidence / 2)
    half = z * sigma * math.sqrt(1 / (cp - start) + 1 / nights_after)
    delta = after - before
    if abs(delta) <= half or abs(delta / before) < settings.min_change_rel:
        return None
    # Every night after the change must sit on the new level's side of the midpoint: one outlier
    # night followed by normal ones is not a change of level.
    if np.any((y[cp:] - (before + after) / 2) * np.sign(delta) <= 0):
        return None
    worse = (delta > 0) == higher_is_worse
    return ChangePoint(
        first_bad_night=window[cp].night_id, last_good_night=window[cp - 1].night_id, before=before, after=after,
        change_rel=delta / abs(before), ci_low_rel=(delta - half) / abs(before),
        ci_high_rel=(delta + half) / abs(before), noise_rel=sigma / abs(before), nights_after=nights_after,
        worse=worse, runs_before=window[cp - 1].runs, runs_after=window[cp].runs)
