"""The typed, versioned model of a run: what `manifest.json` and `summary.json` hold, and the
per-request row schema of `requests.parquet`. `store.py` reads and writes these files; every
other module takes these objects, never the files' string keys.

Versions: 1 (before this module: plain dicts, energy flags stored twice, segments written only
at the end), 2 (segments journaled as they happen, records carry `segment`/`seq`, one flag
list per block). `from_json` migrates older versions; a newer version is refused."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.config import RunSettings, Sampling
from harness.energy.analysis import EnergySummary
from harness.energy.protocol_checks import CacheSplit
from harness.records import SCHEMA_VERSION, GpuInfo, MeterInfo, ProcessIdentity, RequestRecord, RunStatus


def jsonable(value: Any) -> Any:
    """Plain JSON values only: NaN/inf become null (summary.json is strict JSON), numpy scalars
    become Python numbers, tuples become lists."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "__fspath__"):
        return str(value)
    return value


def _pick(cls, data: dict | None) -> dict:
    """The keys of `data` that `cls` knows (older or newer writers may have others)."""
    known = {f.name for f in fields(cls)}
    return {k: v for k, v in (data or {}).items() if k in known}


def _window(value) -> tuple[int, int] | None:
    return (int(value[0]), int(value[1])) if value else None


# manifest ------------------------------------------------------------------------------------
def settings_json(settings: RunSettings) -> dict:
    """RunSettings as the manifest keeps them (`settings`; `sampling` apart), read back by `Manifest.run_settings`."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items() if k != "sampling"}


@dataclass(frozen=True)
class SuiteInfo:
    name: str
    source: str
    hash: str
    items: int
    tasks: dict = field(default_factory=dict)
    limit: int | None = None


@dataclass(frozen=True)
class VariantInfo:
    """The variant a run served (launched) or declared (attached)."""

    name: str
    attached: bool = False
    source: str | None = None
    model: str | None = None
    dummy_weights: bool = False
    served_model_name: str | None = None
    vllm: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ServerInfo:
    base_url: str
    model: str
    launched: bool = False
    command: list | None = None
    env_overrides: dict = field(default_factory=dict)
    vllm_version: str | None = None
    pid: int | None = None
    process: ProcessIdentity | None = None  # launcher/group/token of a launched server (server.stop_leftover)

    @classmethod
    def from_json(cls, data: dict) -> ServerInfo:
        # {} or null where the server was attached; without its token a group can never be told ours
        process = data.get("process") or {}
        usable = process.get("token") and all(process.get(k) is not None for k in ("pgid", "launcher_pid"))
        return cls(**{**_pick(cls, data), "process": ProcessIdentity(**_pick(ProcessIdentity, process))
                      if usable else None})


@dataclass(frozen=True)
class HostInfo:
    """The machine that ran the load generator (runner.host_facts)."""

    platform: str | None = None
    python: str | None = None
    cpu: str | None = None
    cpu_count: int | None = None


@dataclass(frozen=True)
class WarmupInfo:
    """What the warm-up did (harness.protocol.warm_up: rounds at the run's concurrency until the
    latency settles, at most `--warmup N` requests)."""

    requests: int
    concurrency: int = 1
    items_source: str = "noise twins"  # noise twins of the suite's items, or "spec" (the caller's items)
    rounds: int = 0
    settled: bool = False
    failed: int = 0
    round_median_e2e_s: tuple[float, ...] = ()
    rule: str = ""


@dataclass(frozen=True)
class Segment:
    """One process's stretch of a run (the first, then one per `--resume`). Written to the
    manifest when it starts and as each phase begins, so a run killed with SIGKILL still says
    where its segments were; the request records carry the segment index too."""

    index: int
    started_wall_s: float
    clock_wall_minus_mono_ns: int
    settings: dict = field(default_factory=dict)  # options in force for this segment
    idle_window_ns: tuple[int, int] | None = None  # idle power before the requests
    idle_after_window_ns: tuple[int, int] | None = None  # idle power after them (after a settle)
    warmup: WarmupInfo | None = None
    passes_completed: int = 0
    between_passes_calls: int = 0
    # What each between-passes call reported, e.g. the cache reset: {"after_pass": k, "cache_reset": {route: ok}}
    between_passes_log: tuple[dict, ...] = ()
    requests_started_ns: int | None = None
    requests_ended_ns: int | None = None
    ended_wall_s: float | None = None
    end_cause: str | None = None  # None while running or when every item was done
    journal_repaired_bytes: dict = field(default_factory=dict)  # file → torn bytes dropped on open
    client_load: dict | None = None  # the load generator's own event-loop lag and CPU (harness.load.ClientLoad)

    @property
    def cache_resets(self) -> tuple[dict, ...]:
        """What each cache reset between passes reported ({route: ok}), in order."""
        return tuple(entry.get("cache_reset") or {} for entry in self.between_passes_log)

    @classmethod
    def from_json(cls, data: dict, index: int) -> Segment:
        data = {**_pick(cls, data), "index": data.get("index", index)}
        for key in ("idle_window_ns", "idle_after_window_ns"):
            data[key] = _window(data.get(key))
        data["between_passes_log"] = tuple(data.get("between_passes_log") or ())
        if data.get("warmup"):
            warmup = _pick(WarmupInfo, data["warmup"])
            warmup["round_median_e2e_s"] = tuple(warmup.get("round_median_e2e_s") or ())
            data["warmup"] = WarmupInfo(**warmup)
        return cls(**data)


@dataclass(frozen=True)
class Manifest:
    run_id: str
    status: RunStatus
    suite: SuiteInfo
    harness_version: str = "?"
    created_wall_s: float = 0.0
    host: HostInfo = field(default_factory=HostInfo)
    sampling: dict = field(default_factory=dict)  # the Sampling settings
    sampling_sent: dict = field(default_factory=dict)  # what the request bodies carried
    settings: dict = field(default_factory=dict)  # RunSettings of the first segment
    phase_weights: dict = field(default_factory=dict)
    segments: tuple[Segment, ...] = ()
    variant: VariantInfo | None = None
    server: ServerInfo | None = None
    meter: MeterInfo | None = None
    incomplete_cause: str | None = None
    server_log_tail: str | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def complete(self) -> bool:
        return self.status == RunStatus.COMPLETE

    @property
    def samples(self) -> int:
        return int(self.settings.get("samples") or 1)

    @property
    def concurrency(self) -> int:
        """Requests in flight (the first segment's setting; a resume keeps it)."""
        return int(self.settings.get("concurrency") or 1)

    def run_settings(self) -> RunSettings:
        """The run's settings as it started them (what `--resume` keeps), validated again."""
        known = set(RunSettings.__dataclass_fields__)
        saved = {k: v for k, v in self.settings.items() if k in known}
        for key in ("results_dir", "power_trace"):
            saved[key] = Path(saved[key]) if saved.get(key) else None
        return RunSettings(**{**saved, "sampling": Sampling(**self.sampling)})

    @property
    def first_clock_offset_ns(self) -> int | None:
        return self.segments[0].clock_wall_minus_mono_ns if self.segments else None

    @property
    def power_limit_w(self) -> float | None:
        limits = [g.power_limit_w for g in (self.meter.gpus if self.meter else ()) if g.power_limit_w]
        return sum(limits) if limits else None

    def with_segment(self, segment: Segment) -> Manifest:
        """This manifest with `segment` added, or replacing the one with its index."""
        kept = tuple(s for s in self.segments if s.index != segment.index)
        return replace(self, segments=tuple(sorted((*kept, segment), key=lambda s: s.index)))

    def to_json(self) -> dict:
        return jsonable({**asdict(self), "status": self.status.value})

    @classmethod
    def from_json(cls, data: dict) -> Manifest:
        data = dict(data)
        data["status"] = RunStatus(data.get("status", "running"))
        data["suite"] = SuiteInfo(**_pick(SuiteInfo, data.get("suite")))
        data["host"] = HostInfo(**_pick(HostInfo, data.get("host")))
        data["segments"] = tuple(Segment.from_json(s, i) for i, s in enumerate(data.get("segments") or []))
        if data.get("variant"):
            data["variant"] = VariantInfo(**_pick(VariantInfo, data["variant"]))
        if data.get("server"):
            data["server"] = ServerInfo.from_json(data["server"])
        if data.get("meter"):
            meter = _pick(MeterInfo, data["meter"])
            meter["gpus"] = tuple(GpuInfo(**_pick(GpuInfo, g)) for g in meter.get("gpus") or [])
            data["meter"] = MeterInfo(**meter)
        data["schema_version"] = SCHEMA_VERSION
        return cls(**_pick(cls, data))


# summary -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Percentiles:
    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None


@dataclass(frozen=True)
class LatencySummary:
    requests: int = 0
    ok: int = 0
    failed: int = 0
    attempts: int = 0
    retried_attempts: int = 0
    failures_by_status: dict = field(default_factory=dict)
    duration_s: float = 0.0  # the measured window: the sum of the segments' request windows
    requests_per_s: float | None = None
    output_tokens_per_s: float | None = None
    prompt_tokens_mean: float | None = None
    completion_tokens_mean: float | None = None
    ttft_s: Percentiles = field(default_factory=Percentiles)
    tpot_s: Percentiles = field(default_factory=Percentiles)
    itl_s: Percentiles = field(default_factory=Percentiles)  # of per-request mean gaps (README: latency definitions)
    e2e_s: Percentiles = field(default_factory=Percentiles)
    by_task: dict = field(default_factory=dict)
    itl_pooled_mean_s: float | None = None  # mean of all gaps pooled across requests (vllm bench serve's ITL)

    @classmethod
    def from_json(cls, data: dict) -> LatencySummary:
        data = _pick(cls, data)
        for key in ("ttft_s", "tpot_s", "itl_s", "e2e_s"):
            data[key] = Percentiles(**_pick(Percentiles, data.get(key)))
        return cls(**data)


@dataclass(frozen=True)
class QualitySummary:
    scored: int = 0
    items: int = 0
    overall: float | None = None
    by_task: dict = field(default_factory=dict)
    metric_by_task: dict = field(default_factory=dict)
    per_item_std_mean: float | None = None
    truncated_share_by_task: dict = field(default_factory=dict)  # answers cut by max_tokens, per task
    score_sum: float | None = None


@dataclass(frozen=True)
class Summary:
    """summary.json. `flags` are the run's own findings (incomplete, journal repaired); the
    energy block keeps its own validity flags: each flag is stored once."""

    run_id: str
    status: RunStatus
    variant: str | None
    suite: str | None
    latency: LatencySummary
    energy: EnergySummary
    quality: QualitySummary
    flags: tuple[str, ...] = ()
    schema_version: int = SCHEMA_VERSION

    @property
    def all_flags(self) -> list[str]:
        return [*self.energy.flags, *self.flags]

    def to_json(self) -> dict:
        return jsonable({**asdict(self), "status": self.status.value})

    @classmethod
    def from_json(cls, data: dict) -> Summary:
        energy = _pick(EnergySummary, data.get("energy") or {"available": False})
        energy.setdefault("available", False)
        energy["cache"] = CacheSplit(**_pick(CacheSplit, energy["cache"])) if energy.get("cache") else None
        energy["flags"] = list(energy.get("flags") or [])
        flags = list(data.get("flags") or [])
        if data.get("schema_version", 1) < 2:  # v1 stored the energy flags in both lists
            flags = [f for f in flags if f not in energy["flags"]]
        return cls(run_id=data.get("run_id") or "?", status=RunStatus(data.get("status") or "running"),
                   variant=data.get("variant"), suite=data.get("suite"),
                   latency=LatencySummary.from_json(data.get("latency") or {}),
                   energy=EnergySummary(**energy), quality=QualitySummary(**_pick(QualitySummary, data.get("quality"))),
                   flags=tuple(flags))


# competition replay --------------------------------------------------------------------------
J_PER_WH = 3600.0


@dataclass(frozen=True)
class PassTotals:
    """One pass (cold or warm) of a competition replay: its run's suite totals."""

    run: str
    requests: int
    ok: int
    duration_s: float
    total_j: float | None
    above_idle_j: float | None = None
    j_per_request_mean: float | None = None
    unavailable_reason: str | None = None
    flags: tuple[str, ...] = ()

    @property
    def total_wh(self) -> float | None:
        return self.total_j / J_PER_WH if self.total_j is not None else None

    @classmethod
    def of(cls, run: str, summary: Summary) -> PassTotals:
        energy, latency = summary.energy, summary.latency
        return cls(run=run, requests=latency.requests, ok=latency.ok, duration_s=latency.duration_s,
                   total_j=energy.total_j, above_idle_j=energy.above_idle_j,
                   j_per_request_mean=energy.j_per_request_mean, unavailable_reason=energy.unavailable_reason,
                   flags=tuple(summary.all_flags))

    def to_json(self) -> dict:
        return jsonable({**asdict(self), "total_wh": self.total_wh})

    @classmethod
    def from_json(cls, data: dict) -> PassTotals:
        return cls(**{**_pick(cls, data), "flags": tuple(data.get("flags") or ())})


@dataclass(frozen=True)
class CompetitionResult:
    """competition.json: both passes of a replay over one server start, and their difference."""

    variant: str
    suite: str
    concurrency: int
    cold: PassTotals
    warm: PassTotals
    server_command: list | None = None
    server_env_overrides: dict = field(default_factory=dict)
    cache_reset_between_passes: dict = field(default_factory=dict)
    protocol: str = "competition"

    @property
    def cold_minus_warm_j(self) -> float | None:
        both = self.cold.total_j is not None and self.warm.total_j is not None
        return self.cold.total_j - self.warm.total_j if both else None

    @property
    def cold_over_warm(self) -> float | None:
        both = self.cold.total_j is not None and self.warm.total_j  # (a warm total of 0 J has no ratio)
        return self.cold.total_j / self.warm.total_j if both else None

    def to_json(self) -> dict:
        data = {"protocol": self.protocol, "variant": self.variant, "suite": self.suite,
                "concurrency": self.concurrency, "server_command": self.server_command,
                "server_env_overrides": self.server_env_overrides,
                "cache_reset_between_passes": self.cache_reset_between_passes,
                "cold": self.cold.to_json(), "warm": self.warm.to_json()}
        if self.cold_minus_warm_j is not None:
            data["cold_minus_warm_j"] = self.cold_minus_warm_j
        if self.cold_over_warm is not None:
            data["cold_over_warm"] = self.cold_over_warm
        return jsonable(data)

    @classmethod
    def from_json(cls, data: dict) -> CompetitionResult:
        return cls(**{**_pick(cls, data), "cold": PassTotals.from_json(data["cold"]),
                      "warm": PassTotals.from_json(data["warm"])})


# request rows --------------------------------------------------------------------------------
RECORD_COLUMNS = tuple(RequestRecord.__dataclass_fields__)
_SURROGATE = re.compile("[\ud800-\udfff]")  # in a Python str, any surrogate is a lone one
INT_COLUMNS = ("seed", "first_token_ns", "prompt_tokens", "completion_tokens", "http_status", "cached_tokens",
               "reasoning_tokens", "segment", "seq")
TEXT_COLUMNS = ("output_text", "reasoning_text", "error", "finish_reason", "anomaly")


def _as_int(value) -> tuple[int | None, bool]:
    """(the integer, was it odd?) An integral float or numeric string is taken; anything else
    becomes None and is reported (the journal keeps the original)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None, False
    if isinstance(value, bool):
        return None, True
    if isinstance(value, int):
        return value, False
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None, True
    return (int(number), False) if math.isfinite(number) and number.is_integer() else (None, True)


def _as_text(value) -> tuple[str | None, str | None]:
    """Text parquet can store (valid UTF-8), and what had to change: a non-string becomes its
    JSON text, a lone surrogate becomes U+FFFD. The journal keeps the exact original."""
    if value is None:
        return None, None
    note = None
    if not isinstance(value, str):
        value, note = json.dumps(value, default=str), f"non-string {type(value).__name__} stored as JSON text"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = _SURROGATE.sub("\ufffd", value)
        note = "lone surrogate replaced by U+FFFD in the tables (the journal keeps it)"
    return value, note


def normalize_row(row: dict) -> dict:
    """One journal line as the typed row schema: whatever the server sent is kept, odd values
    are made storable and named in `anomaly`, so one strange answer cannot stop analysis."""
    out = {k: row.get(k) for k in RECORD_COLUMNS}
    notes = [row["anomaly"]] if row.get("anomaly") else []
    for key in INT_COLUMNS:
        value, odd = _as_int(out.get(key))
        if odd:
            notes.append(f"{key}={out.get(key)!r} is not an integer")
        out[key] = value
    for key in TEXT_COLUMNS:
        text, note = _as_text(out.get(key))
        out[key] = text if text is not None or key not in ("output_text", "reasoning_text") else ""
        if note:
            notes.append(f"{key}: {note}")
    refs = out.get("references")
    out["references"] = [(_as_text(r)[0] or "") for r in refs] if isinstance(refs, (list, tuple)) else []
    out["anomaly"] = "; ".join(dict.fromkeys(notes)) or None
    return out


def request_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame([normalize_row(r) for r in rows], columns=list(RECORD_COLUMNS))
    return frame.astype({k: "Int64" for k in INT_COLUMNS})


def conform(frame: pd.DataFrame) -> pd.DataFrame:
    """A stored request table with every record column (older runs lack newer fields: None)."""
    missing = [c for c in RECORD_COLUMNS if c not in frame]
    return frame.assign(**{c: None for c in missing}) if missing else frame


def _attempt_order(requests: pd.DataFrame) -> pd.DataFrame:
    if len(requests) and {"segment", "seq"} <= set(requests) and requests["segment"].notna().all() \
            and requests["seq"].notna().all():
        return requests.sort_values(["segment", "seq"], kind="stable")
    return requests


def mark_retried(requests: pd.DataFrame) -> pd.DataFrame:
    """The one definition of "final attempt": `retried` is true for every attempt but the last
    of its (item, sample), in the order attempts were made -- by segment, then journal sequence
    (never by the monotonic clock, which restarts at boot). Rows without them (older runs) keep
    their stored order. Only the final attempt counts for quality and latency; every attempt
    counts for energy."""
    out = _attempt_order(conform(requests)).reset_index(drop=True)
    out["retried"] = out.duplicated(["item_id", "sample_index"], keep="last")
    return out


def final_attempts(requests: pd.DataFrame) -> pd.DataFrame:
    """The final attempt of every (item, sample), index kept."""
    if "retried" in requests:
        return requests[~requests["retried"].astype(bool)]
    ordered = _attempt_order(requests)
    return requests.loc[ordered.index[~ordered.duplicated(["item_id", "sample_index"], keep="last")]]
