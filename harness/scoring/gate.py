"""The quality gate: is the candidate's quality ≥ `threshold` × the baseline's, with confidence?

Pure functions over per-item score tables. Items are paired by id; the unit of resampling is
the item (with all its K samples, averaged), because items differ far more than samples of
one item do and both runs answered the same items. The ratio is mean(candidate) /
mean(baseline) over the paired items; its confidence interval is the percentile interval of a
seeded paired bootstrap.

Verdict: PASS when the interval's lower bound ≥ threshold, FAIL when its upper bound <
threshold, INCONCLUSIVE otherwise -- then with an estimate of how many items (at the same
spread) would settle it, since an interval narrows as 1/sqrt(items)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"
EXIT_CODES = {PASS: 0, FAIL: 1, INCONCLUSIVE: 3}
# The gate's defaults, used by every command that gates (gate, compare, submit).
DEFAULT_THRESHOLD = 0.8
DEFAULT_CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 10_000
MIN_RESAMPLES = 1_000  # fewer makes the interval's tails (2.5 % of the resamples) a handful of draws
MIN_ITEMS = 5  # fewer paired items: no interval worth stating ("too few items", never NaN)


@dataclass(frozen=True)
class RatioEstimate:
    baseline_mean: float
    candidate_mean: float
    ratio: float | None  # None when the baseline scores 0: the ratio is undefined
    low: float | None
    high: float | None
    items: int
    verdict: str
    items_to_settle: int | None = None  # rough total of items that would likely settle it
    note: str | None = None


@dataclass(frozen=True)
class GateResult:
    threshold: float
    confidence: float
    resamples: int
    seed: int
    overall: RatioEstimate
    by_task: dict[str, RatioEstimate] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return self.overall.verdict

    def to_dict(self) -> dict:
        return asdict(self)


def verdict_for(low: float, high: float, threshold: float) -> str:
    if low >= threshold:
        return PASS
    if high < threshold:
        return FAIL
    return INCONCLUSIVE


def bootstrap_ratio(baseline: np.ndarray, candidate: np.ndarray, *, threshold: float, confidence: float,
                    resamples: int, rng: np.random.Generator) -> RatioEstimate:
    """`baseline[i]`, `candidate[i]`: the per-item mean scores of item i in each run."""
    n = len(baseline)
    b_mean, c_mean = float(baseline.mean()), float(candidate.mean())
    if n < MIN_ITEMS:
        return RatioEstimate(b_mean, c_mean, c_mean / b_mean if b_mean else None, None, None, n, INCONCLUSIVE,
                             note=f"too few items ({n}, need at least {MIN_ITEMS}) for an interval")
    if b_mean == 0:
        return RatioEstimate(b_mean, c_mean, None, None, None, n, INCONCLUSIVE,
                             note="the baseline scores 0 on these items: the quality ratio is undefined")
    idx = rng.integers(0, n, size=(resamples, n))
    b = baseline[idx].mean(axis=1)
    c = candidate[idx].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(b > 0, c / np.where(b > 0, b, 1), np.where(c > 0, np.inf, 1.0))
    alpha = (1 - confidence) / 2
    low, high = (float(x) for x in np.quantile(ratios, [alpha, 1 - alpha], method="inverted_cdf"))
    ratio = c_mean / b_mean
    verdict = verdict_for(low, high, threshold)
    return RatioEstimate(b_mean, c_mean, ratio, low, high, n, verdict,
                         items_to_settle=_items_to_settle(ratio, low, high, threshold, n)
                         if verdict == INCONCLUSIVE else None)


def _items_to_settle(ratio: float, low: float, high: float, threshold: float, n: int) -> int | None:
    """Items needed for the interval's near side to clear the threshold, assuming the ratio
    stays put and the half-width shrinks as 1/sqrt(n)."""
    distance = abs(ratio - threshold)
    half = (ratio - low) if ratio >= threshold else (high - ratio)
    if distance == 0 or not math.isfinite(half) or half <= 0:
        return None
    return math.ceil(n * (half / distance) ** 2)


def paired_items(baseline: pd.DataFrame, candidate: pd.DataFrame) -> pd.DataFrame:
    """Per-item means of both runs over the items both scored: columns task, baseline, candidate."""
    def per_item(frame):
        scored = frame[frame["score"].notna()]
        return scored.groupby("item_id").agg(task=("task", "first"), score=("score", "mean"))

    b, c = per_item(baseline), per_item(candidate)
    joined = b.merge(c[["score"]], left_index=True, right_index=True, how="inner", suffixes=("_b", "_c"))
    return pd.DataFrame({"task": joined["task"], "baseline": joined["score_b"], "candidate": joined["score_c"]})


def check_parameters(threshold: float, confidence: float, resamples: int) -> None:
    """ValueError naming the option when a gate parameter is out of range."""
    if not 0 < threshold <= 1:
        raise ValueError(f"--threshold must be in (0, 1], got {threshold}")
    if not 0 < confidence < 1:
        raise ValueError(f"--confidence must be in (0, 1), got {confidence}")
    if resamples < MIN_RESAMPLES:
        raise ValueError(f"--resamples must be at least {MIN_RESAMPLES}, got {resamples}")


def gate(pairs: pd.DataFrame, *, threshold: float = DEFAULT_THRESHOLD, confidence: float = DEFAULT_CONFIDENCE,
         resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> GateResult:
    check_parameters(threshold, confidence, resamples)
    rng = np.random.default_rng(seed)

    def estimate(frame: pd.DataFrame) -> RatioEstimate:
        return bootstrap_ratio(frame["baseline"].to_numpy(float), frame["candidate"].to_numpy(float),
                               threshold=threshold, confidence=confidence, resamples=resamples, rng=rng)

    overall = estimate(pairs)
    by_task = {task: estimate(group) for task, group in pairs.groupby("task")}
    return GateResult(threshold, confidence, resamples, seed, overall, by_task)
