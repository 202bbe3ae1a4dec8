"""Load shapes: when each request is sent and how many may be in flight; sweeps.

Pure and seeded (the same spec gives the same schedule), except `Pacer`, which sleeps until each
request's send time on the event loop. The run loop plugs in with two calls per work unit:

    pacer = Pacer(spec.load, len(units))              # once, when the measured phase starts
    ...
    if not await pacer.wait_turn(index):              # before taking the concurrency semaphore
        return                                        # --duration is over: not sent, not recorded

Arrivals follow vLLM's `bench serve`: inter-arrival gaps drawn from a gamma distribution with shape
`burstiness` and mean 1/rate (burstiness 1 is a Poisson process; below 1 burstier, above 1 more
regular); the first request goes at 0. `concurrency` stays an upper bound: a request whose time has
come waits for a free slot, so a rate the server cannot follow shows up as queueing, which the
record's start time (taken when the request is really sent) does not hide."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import numpy as np

from harness.errors import ConfigError

# The client is saturated (its own delays enter the latencies it reports) beyond these.
LAG_P99_LIMIT_MS = 5.0
CPU_SHARE_LIMIT = 0.9


@dataclass(frozen=True)
class LoadSpec:
    concurrency: int = 1  # upper bound of requests in flight
    request_rate: float | None = None  # mean requests/s; None: the next request goes as soon as a slot is free
    burstiness: float = 1.0  # gamma shape of the gaps between arrivals (1: Poisson)
    duration_s: float | None = None  # no new request after this many seconds of the measured phase
    max_requests: int | None = None  # this many requests, cycling through the suite's items
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.concurrency >= 1, "--concurrency must be ≥ 1"),
            (self.request_rate is None or (math.isfinite(self.request_rate) and self.request_rate > 0),
             "--request-rate must be a positive number"),
            (math.isfinite(self.burstiness) and self.burstiness > 0, "--burstiness must be a positive number"),
            (self.duration_s is None or (math.isfinite(self.duration_s) and self.duration_s > 0),
             "--duration must be a positive number of seconds"),
            (self.max_requests is None or self.max_requests >= 1, "--max-requests must be ≥ 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


def arrival_offsets_s(n: int, rate: float | None, burstiness: float = 1.0, seed: int = 0) -> np.ndarray:
    """Send times of `n` requests in seconds from the start of the phase (all 0 without a rate)."""
    if n <= 0:
        return np.zeros(0)
    if rate is None:
        return np.zeros(n)
    gaps = np.random.default_rng(seed).gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=n - 1)
    return np.concatenate(([0.0], np.cumsum(gaps)))


def cycled(n_items: int, max_requests: int | None, samples: int = 1) -> list[tuple[int, int]]:
    """(item position, pass index) of every request: `samples` passes over the items, or exactly
    `max_requests` requests cycling through them (pass index = how many times the item came before),
    so the count does not depend on --samples."""
    total = n_items * samples if max_requests is None else max_requests
    return [(i % n_items, i // n_items) for i in range(total)] if n_items else []


def parse_levels(text: str, name: str = "--concurrency") -> tuple[float, ...]:
    """'1,4,16,64' → (1, 4, 16, 64); one value is a plain run, several a sweep (one run per level)."""
    message = f"{name} must be a positive number or a comma-separated list of them, not '{text}'"
    try:
        levels = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(message) from None
    if not levels or any(not math.isfinite(v) or v <= 0 for v in levels):
        raise ConfigError(message)
    return levels


def sweep_specs(base: LoadSpec, concurrency: tuple[float, ...] = (), rates: tuple[float, ...] = ()) -> list[LoadSpec]:
    """One LoadSpec per level of a sweep (concurrency levels, or request-rate levels), in the given order."""
    if concurrency and rates and len(concurrency) > 1 and len(rates) > 1:
        raise ConfigError("sweep either --concurrency or --request-rate, not both")
    if len(concurrency) > 1:
        return [replace(base, concurrency=int(c)) for c in concurrency]
    if len(rates) > 1:
        return [replace(base, request_rate=r) for r in rates]
    return [base]


def level_name(spec: LoadSpec) -> str:
    """The suffix of a sweep level's run folder: c16, r2.5, c16-r2.5."""
    parts = [f"c{spec.concurrency}"]
    if spec.request_rate is not None:
        parts.append(f"r{spec.request_rate:g}")
    return "-".join(parts)


class Pacer:
    """Holds each request until its send time; says when --duration is over.

    Every send time is counted from the phase's start, never from the previous wake-up, so a timer
    that fires late (a busy machine) delays that one request and does not shift the rest. `clock_ns`
    and `sleep` are the seam the tests drive with a virtual clock."""

    def __init__(self, spec: LoadSpec, n: int, start_ns: int | None = None, *,
                 clock_ns: Callable[[], int] = time.monotonic_ns,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep):
        self.spec = spec
        self.clock_ns, self.sleep = clock_ns, sleep
        self.offsets_ns = (arrival_offsets_s(n, spec.request_rate, spec.burstiness, spec.seed) * 1e9).astype(np.int64)
        self.start_ns = clock_ns() if start_ns is None else start_ns
        self.end_ns = None if spec.duration_s is None else self.start_ns + int(spec.duration_s * 1e9)

    def due_ns(self, index: int) -> int:
        return self.start_ns + int(self.offsets_ns[index])

    async def wait_turn(self, index: int) -> bool:
        """Sleep until request `index` is due; False when the phase's duration is over by then."""
        due = self.due_ns(index)
        if self.end_ns is not None and due >= self.end_ns:
            return False
        delay_s = (due - self.clock_ns()) / 1e9
        if delay_s > 0:
            await self.sleep(delay_s)
        return self.end_ns is None or self.clock_ns() < self.end_ns


# --- the client's own load --------------------------------------------------------------------------

@dataclass(frozen=True)
class ClientLoad:
    """How busy the load generator itself was: event-loop lag (how late a timer fired) and CPU."""

    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    cpu_s: float  # process CPU time (user + system) over the phase
    wall_s: float

    @property
    def cpu_share(self) -> float:
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def saturated(self) -> bool:
        """True when the client's own delays may have entered the latencies it measured."""
        return self.lag_p99_ms > LAG_P99_LIMIT_MS or self.cpu_share > CPU_SHARE_LIMIT

    def to_dict(self) -> dict:
        return {"lag_p50_ms": self.lag_p50_ms, "lag_p99_ms": self.lag_p99_ms, "lag_max_ms": self.lag_max_ms,
                "cpu_s": self.cpu_s, "wall_s": self.wall_s, "cpu_share": self.cpu_share, "saturated": self.saturated}


def client_load(lags_ns: list[int] | np.ndarray, cpu_s: float, wall_s: float) -> ClientLoad:
    lags = np.asarray(lags_ns, dtype=np.float64) / 1e6
    if len(lags) == 0:
        return ClientLoad(0.0, 0.0, 0.0, cpu_s, wall_s)
    return ClientLoad(float(np.percentile(lags, 50)), float(np.percentile(lags, 99)), float(lags.max()), cpu_s, wall_s)


class LagMonitor:
    """Measures event-loop lag while a phase runs: a timer every `period_s`, and how late it fired.

        async with LagMonitor() as lag: ...   # then lag.result() -> ClientLoad"""

    def __init__(self, period_s: float = 0.01):
        self.period_s = period_s
        self.lags_ns: list[int] = []
        self._task: asyncio.Task | None = None
        self._t0 = self._cpu0 = 0.0
        self._t1 = self._cpu1 = None

    async def _tick(self) -> None:
        period_ns = int(self.period_s * 1e9)
        while True:
            due = time.monotonic_ns() + period_ns
            await asyncio.sleep(self.period_s)
            self.lags_ns.append(max(0, time.monotonic_ns() - due))

    async def __aenter__(self) -> LagMonitor:
        self._t0, self._cpu0 = time.monotonic(), time.process_time()
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    async def __aexit__(self, *exc) -> None:
        self._t1, self._cpu1 = time.monotonic(), time.process_time()
        self._task.cancel()
        # asyncio.wait, not `await task` under suppress(CancelledError): that would also swallow the
        # cancellation of the run itself (a Ctrl-C landing here went unnoticed and the run said "complete").
        await asyncio.wait([self._task])

    def result(self) -> ClientLoad:
        t1 = self._t1 if self._t1 is not None else time.monotonic()
        cpu1 = self._cpu1 if self._cpu1 is not None else time.process_time()
        return client_load(self.lags_ns, cpu1 - self._cpu0, t1 - self._t0)
