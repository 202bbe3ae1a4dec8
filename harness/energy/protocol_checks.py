"""Checks that a run measured the state the competition charges for (harness.protocol): first-seen
prompts, a warm server, a stable idle baseline. Pure: request tables and power curves in, findings out.

* Cache hits: a request whose prompt came mostly from the server's prefix cache skips most of the
  prefill and the vision encoder; its joules say nothing about a suite the server has never seen.
  Energy is reported for first-seen and cache-hit requests apart; the headline is first-seen.
* Cold stalls: a fresh server JIT-compiles kernels on its first batches while the GPU idles; requests
  then wait seconds for their first token. Flagged from the power drawn while they waited.
* Steady state: the first part of a run must not differ from the rest beyond the rest's own spread.
* Idle drift: a GPU may idle higher after work than before it; both windows are compared."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from harness.energy.integrate import PowerCurve, energy_between

# The flags of this module: a run carrying one did not measure what the competition charges, so
# `bench submit` refuses it unless each is accepted with a reason.
PROTOCOL_FLAGS = ("stall", "not_steady", "idle_drift")


def flag_code(flag: str) -> str:
    """A validity flag is "code: plain words"."""
    return flag.split(":", 1)[0].strip()


def protocol_flags(flags) -> list[str]:
    return [f for f in flags if flag_code(f) in PROTOCOL_FLAGS]


# A request is a cache hit when at least this share of its prompt tokens came from the prefix cache.
# First-seen prompts share only the chat template's opening: on vLLM 0.23 (H200, block size 16) every
# first-seen request of the default suite hit 16-32 of its ~355 prompt tokens; a repeat hits nearly all.
CACHE_HIT_MIN_SHARE = 0.5
# A stall: waiting longer than this for the first token ...
STALL_MIN_TTFT_S = 2.0
# ... and longer than this many times the run's median time to first token ...
STALL_TTFT_OVER_MEDIAN = 5.0
# ... while the power above idle was below this share of the run's mean power above idle.
STALL_MAX_POWER_SHARE = 0.25
# Steady state: after the ramp-up (the first `concurrency` requests, which start together and prefill
# together), the next STEADY_HEAD_SHARE of the requests (at least STEADY_MIN_HEAD) is the head ...
STEADY_HEAD_SHARE = 0.1
STEADY_MIN_HEAD = 5
# ... flagged when its median end-to-end latency lies outside the rest's [p10, p90] band and more than
# STEADY_MIN_REL from the rest's median. (Time to first token is left out: in a closed loop it swings with
# the arrival pattern. Both margins were set on 64 runs recorded on four H200s, 2026-11-27: they flag 7 of
# the 12 cold passes of fresh servers, and 2 of the 52 runs after a warm-up, whose heads were 15-20 % slower.)
STEADY_BAND = (10, 90)
STEADY_MIN_REL = 0.15
# Idle after vs before: flagged beyond this many watts and this share of the idle power.
IDLE_DRIFT_MIN_W = 5.0
IDLE_DRIFT_MIN_SHARE = 0.05


def cache_hit_mask(requests: pd.DataFrame) -> pd.Series | None:
    """True for cache-hit requests, False for first-seen ones; None when the server reported no
    cached-token counts for this run (an attached server without --enable-prompt-tokens-details)."""
    if "cached_tokens" not in requests or requests["cached_tokens"].isna().all():
        return None
    cached = requests["cached_tokens"].astype("float64").fillna(0.0)
    prompt = requests["prompt_tokens"].astype("float64")
    return (cached >= CACHE_HIT_MIN_SHARE * prompt) & (prompt > 0)


@dataclass(frozen=True)
class CacheSplit:
    """Energy per request of the ok requests, first-seen and cache-hit apart."""

    reported: bool  # did the server report cached tokens at all?
    first_seen_requests: int
    cache_hit_requests: int
    cached_prompt_token_share: float | None  # Σ cached / Σ prompt tokens over ok requests
    first_seen_j_per_request_mean: float | None
    cache_hit_j_per_request_mean: float | None
    first_seen_above_idle_j_per_request_mean: float | None
    cache_hit_above_idle_j_per_request_mean: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def _mean(values: pd.Series) -> float | None:
    values = values.dropna()
    return float(values.mean()) if len(values) else None


def cache_split(ok: pd.DataFrame) -> CacheSplit:
    """`ok`: the final, answered requests with their energy columns."""
    hits = cache_hit_mask(ok)
    if hits is None:
        return CacheSplit(False, len(ok), 0, None, _mean(ok["energy_j"]), None,
                          _mean(ok.get("energy_above_idle_j", pd.Series(dtype=float))), None)
    prompt = float(ok["prompt_tokens"].astype("float64").sum())
    share = float(ok["cached_tokens"].astype("float64").fillna(0).sum()) / prompt if prompt else None
    above = ok["energy_above_idle_j"] if "energy_above_idle_j" in ok else pd.Series(np.nan, index=ok.index)
    return CacheSplit(True, int((~hits).sum()), int(hits.sum()), share,
                      _mean(ok.loc[~hits, "energy_j"]), _mean(ok.loc[hits, "energy_j"]),
                      _mean(above[~hits]), _mean(above[hits]))


def stall_flags(ok: pd.DataFrame, curve: PowerCurve | None, idle_power_w: float | None,
                window: tuple[int, int] | None) -> list[str]:
    """Requests that waited long for their first token while the GPU drew near-idle power.
    Without a power curve or idle baseline, long waits alone are not called stalls (the steady-state
    check still sees them)."""
    if curve is None or idle_power_w is None or window is None or ok.empty:
        return []
    ttft = (ok["first_token_ns"].astype("float64") - ok["start_ns"].astype("float64")) / 1e9
    if ttft.dropna().empty:
        return []
    threshold = max(STALL_MIN_TTFT_S, STALL_TTFT_OVER_MEDIAN * float(ttft.median()))
    waiting = ok[ttft > threshold]
    if waiting.empty:
        return []
    run_s = (window[1] - window[0]) / 1e9
    run_above_w = energy_between(curve, window[0], window[1]) / run_s - idle_power_w if run_s > 0 else 0.0
    if run_above_w <= 0:
        return []
    stalled = []
    for row in waiting.itertuples():
        wait_s = (row.first_token_ns - row.start_ns) / 1e9
        mean_w = energy_between(curve, int(row.start_ns), int(row.first_token_ns)) / wait_s
        if mean_w - idle_power_w < STALL_MAX_POWER_SHARE * run_above_w:
            stalled.append(row)
    if not stalled:
        return []
    first = min(stalled, key=lambda r: r.start_ns)
    longest = max((r.first_token_ns - r.start_ns) / 1e9 for r in stalled)
    return [f"stall: {len(stalled)} request(s) waited over {threshold:.1f} s (up to {longest:.1f} s) for their "
            f"first token while the GPU drew under {STALL_MAX_POWER_SHARE:.0%} of the run's power above idle, "
            f"the first at +{(first.start_ns - window[0]) / 1e9:.1f} s: a cold server (kernel compilation?); "
            f"warm up at the run's concurrency (--warmup)"]


def steady_state_flags(ok: pd.DataFrame, concurrency: int) -> list[str]:
    """The head of the run after its ramp-up against the rest, on end-to-end latency."""
    ordered = ok.sort_values("start_ns").iloc[max(0, concurrency):]
    head_n = max(STEADY_MIN_HEAD, int(np.ceil(STEADY_HEAD_SHARE * len(ordered))))
    if len(ordered) < 2 * head_n:
        return []
    head = ordered["e2e_s"].iloc[:head_n].astype("float64")
    rest = ordered["e2e_s"].iloc[head_n:].astype("float64")
    low, high = np.percentile(rest, STEADY_BAND)
    median, typical = float(head.median()), float(rest.median())
    if low <= median <= high or abs(median - typical) <= STEADY_MIN_REL * typical:
        return []
    return [f"not_steady: after the first {concurrency} request(s), the next {head_n} had a median end-to-end "
            f"latency of {median:.3f} s, outside the rest's p{STEADY_BAND[0]}–p{STEADY_BAND[1]} band "
            f"({low:.3f}–{high:.3f} s) and {median / typical - 1:+.0%} from its median: the server was not in "
            f"steady state (warm up at the run's concurrency)"]


def idle_drift_flags(before_w: float | None, after_w: float | None) -> list[str]:
    if before_w is None or after_w is None:
        return []
    diff = after_w - before_w
    if abs(diff) > max(IDLE_DRIFT_MIN_W, IDLE_DRIFT_MIN_SHARE * before_w):
        return [f"idle_drift: idle power after the run ({after_w:.0f} W) differs from before it "
                f"({before_w:.0f} W) by {diff:+.0f} W; above-idle figures use the before-window"]
    return []
