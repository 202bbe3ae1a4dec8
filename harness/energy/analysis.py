"""From a stored power trace and request timings to energy numbers and validity flags.
Pure: takes arrays/dataframes, returns dataclasses/dataframes; no NVML, no files."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd

from harness.energy.attribute import PhaseWeights, Schedule, attribute
from harness.energy.integrate import (
    PowerCurve,
    combine_gpus,
    counter_delta_all_gpus,
    distinct_update_period_s,
    energy_between,
    mean_sample_rate_hz,
)
from harness.energy.protocol_checks import CacheSplit, cache_hit_mask, cache_split, idle_drift_flags, stall_flags

# NVML clock-event ("throttle") reasons that mean the GPU was held back by power or heat.
# Idle, application clocks, sync boost and display clock are benign and ignored.
THROTTLE_BITS = {
    0x4: "sw_power_cap", 0x8: "hw_slowdown", 0x20: "sw_thermal", 0x40: "hw_thermal", 0x80: "hw_power_brake",
}
COUNTER_TOLERANCE = 0.02  # counter vs integral: relative difference flagged above this
MIN_SENSOR_PERIODS = 10  # a window shorter than this many sensor periods is too short to trust
TEMPERATURE_EXCURSION_C = 10.0

ENERGY_COLUMNS = ("energy_j", "prefill_energy_j", "decode_energy_j", "energy_above_idle_j", "j_per_output_token")


@dataclass(frozen=True)
class EnergyWindow:
    start_ns: int
    end_ns: int

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


@dataclass(frozen=True)
class EnergySummary:
    """The energy block of summary.json. Fields are None with `unavailable_reason` set when
    nothing could be measured (no GPU).

    Identities (asserted on every recorded run in tests): attributed_j + unattributed_j ==
    total_j, Σ per-request energy_above_idle_j + unattributed_above_idle_j == above_idle_j, and
    window_s is the same measured window the throughput uses."""

    available: bool
    unavailable_reason: str | None = None
    source: str | None = None  # which number is `total_j`: "counter" or "integral"
    total_j: float | None = None
    counter_j: float | None = None
    integral_j: float | None = None
    attributed_j: float | None = None
    unattributed_j: float | None = None
    attribution_scale: float | None = None  # counter / integral applied to every share
    counter_integral_rel_diff: float | None = None
    idle_power_w: float | None = None
    idle_window_s: float | None = None
    above_idle_j: float | None = None  # the attribution of (power - idle power), scaled like the total
    unattributed_above_idle_j: float | None = None
    idle_after_power_w: float | None = None  # idle power measured after the requests (reported only)
    idle_after_window_s: float | None = None
    j_per_correct_answer: float | None = None
    window_s: float | None = None
    mean_power_w: float | None = None
    j_per_request_mean: float | None = None
    j_per_request_median: float | None = None
    j_per_request_p90: float | None = None
    j_per_output_token: float | None = None
    above_idle_j_per_request_mean: float | None = None
    # Which requests the j_per_request_* figures cover: "first-seen" when the server reported cached prompt
    # tokens (cache hits are reported apart in `cache`); "first pass" when it did not and --samples K re-sent
    # the items without a cache reset between passes; else "all" (harness.energy.protocol_checks).
    headline_requests: str = "all"
    cache: CacheSplit | None = None  # None: not analysed (no energy)
    prefill_share: float | None = None
    sensor_period_s: float | None = None
    sample_rate_hz: float | None = None
    gap_excluded_s: float = 0.0
    phase_weights: dict = field(default_factory=dict)
    bad_power_samples: int = 0  # NaN, negative or non-numeric power readings left out
    flags: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def headline_selection(ok: pd.DataFrame, first_pass_only: bool = False) -> tuple[pd.DataFrame, str]:
    """The requests the j_per_request_* figures cover (of the final ok ones), and their name: first-seen
    prompts where the server reported cached tokens (cache hits cost less than anything the competition
    charges); else the first pass when later passes repeated prompts on a warm cache; else all."""
    hits = cache_hit_mask(ok)
    if hits is not None:
        return (ok[~hits] if (~hits).any() else ok), "first-seen"
    if first_pass_only:  # no cached-token counts and no cache reset between passes: later passes are repeats
        return ok[ok["sample_index"] == ok["sample_index"].min()], "first pass"
    return ok, "all"


def run_window(requests: pd.DataFrame) -> EnergyWindow:
    """First request start to last request end (warmup requests are not in the table)."""
    return EnergyWindow(int(requests["start_ns"].min()), int(requests["end_ns"].max()))


def measured_windows(requests: pd.DataFrame) -> list[EnergyWindow]:
    """The one definition of the measured window, for throughput and energy alike: per run
    segment, its first request start to its last request end. The stretches between segments (a
    crash, a reboot, `--resume`) are not measured. Rows carry their segment (`segment`)."""
    if requests.empty:
        return []
    if "segment" not in requests or requests["segment"].isna().all():
        return [run_window(requests)]
    segment = requests["segment"].fillna(-1)
    return sorted((run_window(group) for _, group in requests.groupby(segment)), key=lambda w: w.start_ns)


def gaps_between(windows: list[EnergyWindow]) -> list[EnergyWindow]:
    return [EnergyWindow(a.end_ns, b.start_ns) for a, b in zip(windows, windows[1:], strict=False)
            if b.start_ns > a.end_ns]


def measured_duration_s(windows: list[EnergyWindow]) -> float:
    if not windows:
        return 0.0
    return (windows[-1].end_ns - windows[0].start_ns) / 1e9 - sum(g.duration_s for g in gaps_between(windows))


def clean_power(samples: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Samples with a finite, non-negative power reading, and how many others were left out."""
    power = pd.to_numeric(samples["power_w"], errors="coerce")
    good = np.isfinite(power.to_numpy(np.float64)) & (power.to_numpy(np.float64) >= 0)
    if good.all():
        return samples, 0
    return samples[good].assign(power_w=power[good].astype("float64")), int((~good).sum())


def curve_from_samples(samples: pd.DataFrame) -> PowerCurve:
    return combine_gpus(samples["t_ns"].to_numpy(), samples["gpu"].to_numpy(), samples["power_w"].to_numpy())


def unavailable(reason: str) -> EnergySummary:
    return EnergySummary(available=False, unavailable_reason=reason)


def analyse(samples: pd.DataFrame, requests: pd.DataFrame, *, idle: EnergyWindow | None,
            weights: PhaseWeights = PhaseWeights(), power_limit_w: float | None = None,
            gaps: list[EnergyWindow] | None = None, idle_after: EnergyWindow | None = None,
            first_pass_only: bool = False) -> tuple[pd.DataFrame, EnergySummary]:
    """Energy columns for every request row and the run's energy summary.

    `gaps` are stretches to leave out (between run segments: a crash and `--resume`); by default
    those between the requests' segments (`measured_windows`). Their energy is neither attributed
    nor counted in the total, and the summary says how long they were."""
    if requests.empty:
        return requests, unavailable("no requests were measured")
    samples, bad = clean_power(samples)
    if samples.empty:
        return requests, unavailable("the power trace is empty" if not bad else
                                     f"the power trace has no valid reading ({bad} NaN/negative/non-numeric)")
    if gaps is None:
        gaps = gaps_between(measured_windows(requests))
    window = run_window(requests)
    samples = hold_edges(samples, window)
    curve = curve_from_samples(samples)
    if not curve.covers(window.start_ns, window.end_ns):
        return requests, unavailable("the power trace does not cover the run window")

    schedule = Schedule.from_lists(
        requests["start_ns"].tolist(),
        [None if pd.isna(f) else int(f) for f in requests["first_token_ns"]],
        requests["end_ns"].tolist(),
    )
    raw = attribute(curve, schedule, (window.start_ns, window.end_ns), weights)
    gap_j = sum(energy_between(curve, g.start_ns, g.end_ns) for g in gaps)
    integral_j = raw.window_j - gap_j
    counter_j = _counter_j(samples, window, gaps)

    idle_power_w, idle_after_power_w = (_mean_power_w(curve, w) for w in (idle, idle_after))

    # The sampled power decides who gets the joules; the counter, where there is one, how many:
    # shares are scaled so that Σ requests + unattributed equals the counter's total exactly.
    # Above-idle is the same attribution of (power - idle power), scaled alike: one definition,
    # so Σ per-request above-idle + unattributed above-idle is the summary's above-idle total.
    scale = counter_j / integral_j if counter_j and integral_j > 0 else 1.0
    att = raw.scaled(scale, less_unattributed_j=gap_j)
    above = None
    if idle_power_w is not None:
        shifted = curve.shifted(idle_power_w)
        above = attribute(shifted, schedule, (window.start_ns, window.end_ns), weights).scaled(
            scale, less_unattributed_j=sum(energy_between(shifted, g.start_ns, g.end_ns) for g in gaps))
    out = requests.copy()
    out["prefill_energy_j"] = att.prefill_j
    out["decode_energy_j"] = att.decode_j
    out["energy_j"] = att.request_j
    out["energy_above_idle_j"] = above.request_j if above is not None else np.nan
    tokens = out["completion_tokens"].astype("float64")
    out["j_per_output_token"] = np.where(tokens > 0, out["energy_j"] / tokens.where(tokens > 0, 1), np.nan)

    window_s = window.duration_s - sum(g.duration_s for g in gaps)  # = measured_duration_s of the windows
    total_j = counter_j if counter_j is not None else integral_j
    ok = out[out["status"] == "ok"]
    if "retried" in ok:
        ok = ok[~ok["retried"].astype(bool)]
    headline, headline_requests = headline_selection(ok, first_pass_only)
    per_request = headline["energy_j"] if len(headline) else out["energy_j"]
    total_tokens = float(ok["completion_tokens"].fillna(0).sum())
    in_window = samples[(samples["t_ns"] >= window.start_ns) & (samples["t_ns"] <= window.end_ns)]
    sensor_period = _sensor_period(samples)
    summary = EnergySummary(
        available=True,
        source="counter" if counter_j is not None else "integral",
        total_j=total_j, counter_j=counter_j, integral_j=integral_j,
        attributed_j=float(att.request_j.sum()), unattributed_j=att.unattributed_j, attribution_scale=scale,
        counter_integral_rel_diff=(integral_j - counter_j) / counter_j if counter_j else None,
        idle_power_w=idle_power_w, idle_window_s=idle.duration_s if idle else None,
        above_idle_j=above.window_j if above is not None else None,
        unattributed_above_idle_j=above.unattributed_j if above is not None else None,
        idle_after_power_w=idle_after_power_w, idle_after_window_s=idle_after.duration_s if idle_after else None,
        window_s=window_s, mean_power_w=integral_j / window_s if window_s > 0 else None,
        j_per_request_mean=float(per_request.mean()), j_per_request_median=float(per_request.median()),
        j_per_request_p90=float(per_request.quantile(0.9)),
        j_per_output_token=float(ok["energy_j"].sum()) / total_tokens if total_tokens else None,
        above_idle_j_per_request_mean=(float(headline["energy_above_idle_j"].mean())
                                       if above is not None and len(headline) else None),
        headline_requests=headline_requests, cache=cache_split(ok),
        prefill_share=float(att.prefill_j.sum() / att.request_j.sum()) if att.request_j.sum() > 0 else None,
        sensor_period_s=sensor_period, sample_rate_hz=mean_sample_rate_hz(samples["t_ns"].to_numpy()),
        gap_excluded_s=sum(g.duration_s for g in gaps),
        phase_weights={"prefill": weights.prefill, "decode": weights.decode}, bad_power_samples=bad,
    )
    flags = (validity_flags(summary, in_window, power_limit_w, peak_power_w(curve, window))
             + stall_flags(ok, curve, idle_power_w, (window.start_ns, window.end_ns))
             + idle_drift_flags(idle_power_w, idle_after_power_w))
    if gaps:
        flags.append(f"resumed: {len(gaps)} gap(s) between run segments ({summary.gap_excluded_s:.1f} s) "
                     f"left out of the energy")
    if bad:
        flags.append(f"bad_power_samples: {bad} NaN, negative or non-numeric power reading(s) left out")
    return out, replace(summary, flags=flags)


def _mean_power_w(curve: PowerCurve, window: EnergyWindow | None) -> float | None:
    if window is None or window.duration_s <= 0 or not curve.covers(window.start_ns, window.end_ns):
        return None
    return energy_between(curve, window.start_ns, window.end_ns) / window.duration_s


def _counter_j(samples: pd.DataFrame, window: EnergyWindow, gaps: list[EnergyWindow]) -> float | None:
    if "energy_mj" not in samples or samples["energy_mj"].isna().all():
        return None
    t, g, e = samples["t_ns"].to_numpy(), samples["gpu"].to_numpy(), samples["energy_mj"].to_numpy(np.float64)
    curves = {gpu: PowerCurve(s["t_ns"].to_numpy(np.int64), s["power_w"].to_numpy(np.float64))
              for gpu, s in samples.groupby("gpu")}
    try:
        total = counter_delta_all_gpus(t, g, e, window.start_ns, window.end_ns, curves)
        return total - sum(counter_delta_all_gpus(t, g, e, x.start_ns, x.end_ns, curves) for x in gaps)
    except ValueError:
        return None


def hold_edges(samples: pd.DataFrame, window: EnergyWindow, max_periods: float = 2.0) -> pd.DataFrame:
    """Extend each GPU's trace to the window edges when it stops short by at most
    `max_periods` sampling intervals, holding the edge reading (the sensor updates every ~100 ms,
    so a reading a few ms old is still the current measurement). The counter is extended by
    that power x the gap. Traces that stop shorter than that are left alone (and the window
    is then reported as not covered)."""
    extra = []
    for gpu, s in samples.groupby("gpu"):
        t = s["t_ns"].to_numpy(np.int64)
        if len(t) < 2:
            continue
        limit = max_periods * float(np.median(np.diff(t)))
        first, last = s.iloc[0], s.iloc[-1]
        for edge, row, sign in ((window.start_ns, first, -1), (window.end_ns, last, +1)):
            gap = (edge - row["t_ns"]) * sign
            if 0 < gap <= limit:
                energy = (row["energy_mj"] + sign * row["power_w"] * gap / 1e6) if pd.notna(row["energy_mj"]) \
                    else np.nan
                extra.append({"t_ns": int(edge), "gpu": gpu, "power_w": row["power_w"], "energy_mj": energy})
    if not extra:
        return samples
    return pd.concat([samples, pd.DataFrame(extra)], ignore_index=True).sort_values(["t_ns", "gpu"],
                                                                                    ignore_index=True)


def _sensor_period(samples: pd.DataFrame) -> float | None:
    periods = [distinct_update_period_s(s["t_ns"].to_numpy(), s["power_w"].to_numpy())
               for _, s in samples.groupby("gpu")]
    periods = [p for p in periods if p is not None]
    return max(periods) if periods else None


def peak_power_w(curve: PowerCurve, window: EnergyWindow) -> float | None:
    inside = curve.power_w[(curve.t_ns >= window.start_ns) & (curve.t_ns <= window.end_ns)]
    return float(inside.max()) if len(inside) else None


def validity_flags(summary: EnergySummary, in_window: pd.DataFrame, power_limit_w: float | None,
                   peak_w: float | None = None) -> list[str]:
    """Findings a reviewer must see, as data. Each flag is a short code + plain words."""
    flags = []
    if summary.sensor_period_s and summary.window_s < MIN_SENSOR_PERIODS * summary.sensor_period_s:
        flags.append(f"short_window: the run window ({summary.window_s:.2f} s) is shorter than "
                     f"{MIN_SENSOR_PERIODS} sensor periods ({summary.sensor_period_s * 1000:.0f} ms each)")
    rel = summary.counter_integral_rel_diff
    if rel is not None and abs(rel) > COUNTER_TOLERANCE:
        flags.append(f"counter_mismatch: the power integral differs from the energy counter by {rel:+.1%}")
    if summary.idle_power_w is not None and summary.mean_power_w is not None \
            and summary.mean_power_w < 0.95 * summary.idle_power_w:
        flags.append(f"below_idle: mean power {summary.mean_power_w:.0f} W is below the idle baseline "
                     f"{summary.idle_power_w:.0f} W")
    if power_limit_w and peak_w is not None and peak_w > power_limit_w:
        flags.append(f"above_limit: power reached {peak_w:.0f} W, above the board limit {power_limit_w:.0f} W")
    if "temperature_c" in in_window and in_window["temperature_c"].notna().any():
        temps = in_window.groupby("gpu")["temperature_c"]
        rise = float((temps.max() - temps.min()).max())
        if rise > TEMPERATURE_EXCURSION_C:
            flags.append(f"temperature_excursion: GPU temperature moved {rise:.0f} °C during the window")
    if "throttle_reasons" in in_window and in_window["throttle_reasons"].notna().any():
        bits = 0
        for value in in_window["throttle_reasons"].dropna().astype("int64"):
            bits |= int(value)
        seen = [name for bit, name in THROTTLE_BITS.items() if bits & bit]
        if seen:
            flags.append(f"throttled: clocks were held back during the window ({', '.join(seen)})")
    return flags
