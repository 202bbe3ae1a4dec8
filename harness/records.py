"""Records shared by every layer: what one request produced, one power sample, run identity.

Clock convention: every `*_ns` timestamp is `time.monotonic_ns()` of the harness process, the
one clock for power samples and request events; the wall-clock offset is recorded once per run
(`RunClock`) so external traces (wall-clock) can be aligned."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum

# Bumped when a stored file changes in a way older readers would misread (see results.py).
SCHEMA_VERSION = 2


class RunStatus(StrEnum):
    RUNNING = "running"
    COMPLETE = "complete"  # written only once the tables and the summary exist
    INCOMPLETE = "incomplete"  # stopped early; `--resume` finishes it
    FAILED = "failed"  # bad input or a server that never came up: nothing to resume


class EnergyMode(StrEnum):
    AUTO = "auto"
    NVML = "nvml"
    POWER_ONLY = "power-only"
    NONE = "none"
    TRACE = "trace"


@dataclass(frozen=True)
class RunClock:
    """Wall-clock time = monotonic time + offset, measured once at run start."""

    wall_minus_mono_ns: int

    @classmethod
    def now(cls) -> RunClock:
        return cls(time.time_ns() - time.monotonic_ns())

    def to_wall_s(self, mono_ns: int) -> float:
        return (mono_ns + self.wall_minus_mono_ns) / 1e9

    def to_mono_ns(self, wall_s: float) -> int:
        return int(round(wall_s * 1e9)) - self.wall_minus_mono_ns


@dataclass(frozen=True)
class RequestRecord:
    """One request as sent and answered. Energy columns are added by analysis, not here."""

    run_id: str
    item_id: str
    sample_index: int  # 0..K-1 when every item is sent K times (--samples K)
    attempt: int  # 1 for the first try; retries of a transient failure count up
    task: str
    metric: str
    seed: int | None
    start_ns: int
    end_ns: int
    first_token_ns: int | None
    start_wall_s: float
    end_wall_s: float
    ttft_s: float | None
    e2e_s: float
    itl_mean_s: float | None
    itl_p50_s: float | None
    itl_p90_s: float | None
    itl_max_s: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str | None
    output_text: str  # the answer (what is scored); reasoning is kept apart
    references: tuple[str, ...]  # the item's reference answers, so a run can be scored on its own
    status: str  # "ok" or an error kind: http_5xx, http_4xx, timeout, connection, protocol, wrong_model
    http_status: int | None = None
    error: str | None = None
    image_converted_from: str | None = None
    # Prompt tokens the server took from its prefix cache (vLLM: usage.prompt_tokens_details.cached_tokens,
    # reported when the server runs with --enable-prompt-tokens-details); None when not reported.
    cached_tokens: int | None = None
    reasoning_text: str = ""  # streamed reasoning (`reasoning_content` / `reasoning` deltas), never scored
    reasoning_tokens: int | None = None  # usage.completion_tokens_details.reasoning_tokens when reported
    anomaly: str | None = None  # what was odd in what the server sent (kept, not fatal), e.g. a missing usage
    segment: int | None = None  # the run segment (0, then one per --resume) that sent it
    seq: int | None = None  # its line in the journal: with `segment`, the order attempts were made

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        # Shallow (the values are immutable): asdict's recursive copy was a tenth of the run loop's CPU.
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True)
class PowerSample:
    """One reading of one GPU. `energy_mj` is the hardware counter (cumulative, mJ) when the
    device has one; temperature/clock/throttle are read at a lower rate and None in between."""

    t_ns: int
    gpu: int
    power_w: float
    energy_mj: float | None = None
    temperature_c: float | None = None
    sm_clock_mhz: float | None = None
    throttle_reasons: int | None = None


@dataclass(frozen=True)
class GpuInfo:
    index: int
    uuid: str
    name: str
    power_limit_w: float | None = None
    has_energy_counter: bool = True


@dataclass(frozen=True)
class ProcessIdentity:
    """How a launched server's processes are found again (server.stop_leftover), and never another
    process mistaken for them: PIDs are reused, so the group is recognised by a random token in its
    environment, on this boot of this machine only."""

    pgid: int  # the launcher leads the group
    launcher_pid: int
    token: str
    server_pid: int | None = None
    launcher_start_ticks: int | None = None
    boot_id: str | None = None
    host: str | None = None


@dataclass(frozen=True)
class MeterInfo:
    """How energy was measured; stored in the manifest so a reviewer can judge the numbers."""

    kind: str  # "nvml", "trace", "none"
    unavailable_reason: str | None = None
    power_source: str | None = None  # e.g. "NVML_FI_DEV_POWER_INSTANT", "nvmlDeviceGetPowerUsage"
    gpus: tuple[GpuInfo, ...] = ()
    driver_version: str | None = None
    nvml_version: str | None = None
    requested_rate_hz: float | None = None
    sensor_period_s: float | None = None  # measured at start-up: time between distinct readings
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)
