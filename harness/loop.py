"""The work loop of one run segment: idle power before, warm-up, the requests pass by pass
(with their retries), a settle and idle power after. Every finished attempt goes to the journal
the moment it ends (with the power samples taken so far), so whatever stops the run loses
nothing already measured.

Extension points for measurement protocols: `RunSpec.warmup_items` (what the warm-up sends; by
default noise twins of the suite's items, harness.protocol), `RunSpec.between_passes` (called
between the passes of `--samples K`), and the `on_phase` callback through which the runner
journals each phase into the manifest's segment."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from harness.client import TRANSIENT_STATUSES, ChatClient, RequestBuilder, StreamResult, retry_delay_s
from harness.config import RunSettings, SuiteSpec, Variant, wait_s
from harness.energy.attribute import PhaseWeights
from harness.energy.meters import PowerMeter
from harness.load import LagMonitor, Pacer, cycled
from harness.progress import LiveEnergy, Progress
from harness.protocol import warm_up
from harness.protocol import warmup_items as noise_twins
from harness.records import RequestRecord, RunClock
from harness.results import Segment, WarmupInfo, final_attempts
from harness.server import LaunchedServer, ServerHandle, log_tail
from harness.store import RunStore
from harness.suite import Suite, SuiteItem

IDLE_AFTER_SETTLE_S = 3.0  # after the last request, before the idle-after window opens ($BENCH_IDLE_AFTER_SETTLE_S)
COMMIT_INTERVAL_S = 0.01  # the journal's group commit: records finished within this share one fsync
POWER_DRAIN_PERIOD_S = 1.0  # power samples go to their journal this often while requests run
SUPERVISE_PERIOD_S = 0.25  # server, limits and power checked at least this often while requests run


@dataclass(frozen=True)
class RunSpec:
    suite: SuiteSpec
    settings: RunSettings
    variant: Variant | None = None  # launch this variant ...
    base_url: str | None = None  # ... or attach to this server
    model: str | None = None  # served model name when attaching
    api_key: str | None = None  # attached servers only; never written anywhere
    dummy_weights: bool = False
    weights: PhaseWeights = field(default_factory=PhaseWeights)
    resume_dir: Path | None = None
    warmup_items: Sequence[SuiteItem] | None = None  # what `--warmup N` cycles through [default: noise twins]
    # Called with k after pass k when pass k+1 follows; what it returns is journaled in the segment.
    between_passes: Callable[[int], dict | None] | None = None


def max_tokens_for(spec: RunSpec) -> int:
    sent = spec.settings.sampling.max_tokens
    return spec.suite.max_tokens if sent is None else sent


def timeout_for(settings: RunSettings, max_tokens: int) -> float:
    return settings.request_timeout_s if settings.request_timeout_s is not None else 30.0 + 0.5 * max_tokens


def warmup_plan(spec: RunSpec, suite: Suite) -> tuple[list[SuiteItem], str]:
    """At most `--warmup N` items for the warm-up, and where they come from: the caller's items
    (cycled), or noise twins of the suite's items (same shapes, pixels no cache has seen)."""
    n = spec.settings.warmup
    if spec.warmup_items is not None:
        items = list(spec.warmup_items)
        return ([items[i % len(items)] for i in range(n)] if items else []), "spec"
    return noise_twins(suite.items, n, seed=spec.settings.seed), "noise twins"


def idle_after_s(settings: RunSettings) -> float:
    return settings.idle_s if settings.idle_after_s is None else settings.idle_after_s


@dataclass(frozen=True)
class WorkUnit:
    position: int  # index of the item in the suite
    item: SuiteItem
    sample_index: int

    @property
    def key(self) -> tuple[str, int]:
        return (self.item.id, self.sample_index)


def finished_keys(requests) -> set[tuple[str, int]]:
    """(item, sample) pairs whose last attempt is final: answered, or failed for a reason a
    retry would not fix. Items cut off by a crash or a signal are missing and will be re-sent."""
    return {(r.item_id, int(r.sample_index)) for r in final_attempts(requests).itertuples()
            if r.status not in TRANSIENT_STATUSES}


def work_units(suite: Suite, samples: int, done: set[tuple[str, int]], max_requests: int | None = None
               ) -> list[WorkUnit]:
    """Pass by pass: every item of sample k before any of sample k+1; with `max_requests`, exactly
    that many requests cycling through the items (harness.load.cycled)."""
    units = [WorkUnit(pos, suite.items[pos], k) for pos, k in cycled(len(suite.items), max_requests, samples)]
    return [u for u in units if u.key not in done]


def request_seed(base: int, unit: WorkUnit) -> int:
    """Distinct per item and per repeat, reproducible from --seed."""
    return base + unit.sample_index * 1_000_003 + unit.position


def to_record(run_id: str, unit: WorkUnit, attempt: int, seed: int, result: StreamResult,
              clock: RunClock, segment: int | None = None) -> RequestRecord:
    ttft = (result.first_token_ns - result.start_ns) / 1e9 if result.first_token_ns else None
    return RequestRecord(
        run_id=run_id, item_id=unit.item.id, sample_index=unit.sample_index, attempt=attempt,
        task=unit.item.task, metric=unit.item.metric, seed=seed, start_ns=result.start_ns, end_ns=result.end_ns,
        first_token_ns=result.first_token_ns, start_wall_s=clock.to_wall_s(result.start_ns),
        end_wall_s=clock.to_wall_s(result.end_ns), ttft_s=ttft, e2e_s=(result.end_ns - result.start_ns) / 1e9,
        **result.itl_stats(), prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
        finish_reason=result.finish_reason, output_text=result.text, references=unit.item.references,
        status=result.status,
        http_status=result.http_status, error=result.error, image_converted_from=unit.item.converted_from,
        cached_tokens=result.cached_tokens,
        # The client may not report these yet (older StreamResult): absent means not reported.
        reasoning_text=getattr(result, "reasoning_text", "") or "",
        reasoning_tokens=getattr(result, "reasoning_tokens", None), anomaly=getattr(result, "anomaly", None),
        segment=segment,
    )


class JournalWriter:
    """Request records to the journal without blocking the event loop: one writer thread, records
    in the order they finished, one fsync per batch (group commit). A stalled fsync on the loop
    would delay every other stream's bytes, and so inflate the latencies measured meanwhile."""

    def __init__(self, store: RunStore):
        self.store = store
        self.pending: list[tuple[str, asyncio.Future]] = []
        self.flushing: asyncio.Task | None = None
        self.last_commit_s = 0.0
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")

    async def append(self, record: RequestRecord) -> RequestRecord:
        """Returns the record as stored (numbered in journal order) once it is on disk."""
        done = asyncio.get_running_loop().create_future()
        # Serialized here, not on the writer thread: a thread running Python code holds the GIL, and the
        # event loop would wait for it (up to the 5 ms switch interval) to read other streams' bytes.
        record, line = self.store.journal_line(record)
        self.pending.append((line, done))
        if self.flushing is None:
            self.flushing = asyncio.get_running_loop().create_task(self._flush())
        await done
        return record

    def close(self) -> None:
        """Write what is still waiting for its commit (a run stopped by a signal cancels the flush),
        after the batch already on the writer thread, in order."""
        self.executor.shutdown(wait=True)
        lines, self.pending = [line for line, _ in self.pending], []
        if lines:
            self.store.append_request_lines(lines)

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.pending:
                # At most one fsync per COMMIT_INTERVAL_S: even on another thread each fsync costs the
                # machine (and so the streams being timed) about a millisecond; a record waits ≤ 10 ms.
                wait_s = self.last_commit_s + COMMIT_INTERVAL_S - time.monotonic()
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
                self.last_commit_s = time.monotonic()
                batch, self.pending = self.pending, []
                try:
                    await loop.run_in_executor(self.executor, self.store.append_request_lines, [r for r, _ in batch])
                except Exception as exc:  # the writer's error (a full disk) is every waiting request's error
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)
        finally:
            self.flushing = None


class WorkLoop:
    """Measures one segment. `on_phase(segment)` is called with the updated segment whenever a
    phase starts or ends, so the runner can journal it into the manifest as it happens."""

    def __init__(self, spec: RunSpec, run_id: str, segment: Segment, server: ServerHandle, meter: PowerMeter,
                 store: RunStore, clock: RunClock, progress: Progress, launched: LaunchedServer | None,
                 on_phase: Callable[[Segment], None]):
        self.spec, self.run_id, self.segment, self.server, self.meter = spec, run_id, segment, server, meter
        self.store, self.clock, self.progress, self.launched = store, clock, progress, launched
        self.on_phase = on_phase
        self.max_tokens = max_tokens_for(spec)
        self.timeout_s = timeout_for(spec.settings, self.max_tokens)
        self.settle_s = wait_s("BENCH_IDLE_AFTER_SETTLE_S", IDLE_AFTER_SETTLE_S)  # read (and checked) up front
        self.finished = self.failed = 0
        self.abort_reason: str | None = None
        # One client per event loop (the segment's asyncio.run); bodies built once, data URLs once per run.
        self.client: ChatClient | None = None
        self.bodies = RequestBuilder(server.model, spec.settings.sampling, self.max_tokens)
        self.lag = LagMonitor()  # the client's own load while the requests run
        self.live = LiveEnergy()  # J/request so far, for the progress display only
        if hasattr(progress, "watch"):  # observers that show no energy need not implement it
            progress.watch(self.live)

    def _mark(self, **changes) -> None:
        self.segment = replace(self.segment, **changes)
        self.on_phase(self.segment)

    def _drain(self) -> None:
        samples = self.meter.drain()
        self.live.add(samples)
        self.store.append_power(samples)

    # one event loop, one client -----------------------------------------------------------
    def run(self, units: list[WorkUnit], warmup: tuple[list[SuiteItem], str]) -> Segment:
        asyncio.run(self._segment(units, warmup))
        return self.segment

    async def _segment(self, units: list[WorkUnit], warmup: tuple[list[SuiteItem], str]) -> None:
        s = self.spec.settings
        self.started_s = time.monotonic()
        self.journal = JournalWriter(self.store)
        async with ChatClient(self.server.base_url, self.spec.api_key) as self.client:
            measuring = self.meter.info.kind != "none"
            if s.idle_s > 0 and measuring:
                self.progress.message(f"measuring idle power for {s.idle_s:.0f} s")
                self._mark(idle_window_ns=await self._idle(s.idle_s))
                self.live.idle_window(*self.segment.idle_window_ns)
            self._drain()
            if s.warmup:
                items, source = warmup
                self.progress.message(f"warm-up: up to {len(items)} request(s) ({source}) at concurrency "
                                      f"{s.concurrency}, until latency settles; not recorded")
                report = await warm_up(self._warmup_send, items, s.concurrency)
                self._mark(warmup=WarmupInfo(report.requests, s.concurrency, source, report.rounds, report.settled,
                                             report.failed, tuple(report.round_median_e2e_s), report.rule))
                self.progress.message(f"warm-up: {report.requests} request(s) in {report.rounds} round(s), "
                                      f"{'settled' if report.settled else 'NOT settled'}")
            self._drain()
            self.bodies.prepare(u.item for u in units)  # every image encoded before the clock starts
            # Connections for the first wave, so that no timed request waits for a connect.
            await self.client.open(min(s.concurrency, len(units)), self.timeout_s)
            self.progress.begin(len(units), self.run_id)
            self._mark(requests_started_ns=time.monotonic_ns())
            self.live.begin_run(self.segment.requests_started_ns)
            self.pacer = Pacer(s.load(), len(units))
            self.index = {id(u): i for i, u in enumerate(units)}
            try:
                async with self.lag:
                    await self._passes(units)
            finally:
                self.progress.end()
                self.journal.close()
            self._mark(requests_ended_ns=time.monotonic_ns(), client_load=self.lag.result().to_dict())
            after = idle_after_s(s)
            if after > 0 and measuring and not self.abort_reason:
                # A GPU may idle higher after work than before it: measure idle again once it has settled.
                self.progress.message(f"measuring idle power after the run for {after:.0f} s "
                                      f"(after {self.settle_s:.0f} s to settle)")
                await asyncio.sleep(self.settle_s)
                self._mark(idle_after_window_ns=await self._idle(after))
            self._drain()

    async def _idle(self, seconds: float) -> tuple[int, int]:
        start = time.monotonic_ns()
        await asyncio.sleep(seconds)
        return (start, time.monotonic_ns())

    async def _warmup_send(self, item: SuiteItem) -> tuple[bool, float]:
        """One warm-up request (never recorded): (ok, end-to-end seconds)."""
        result = await self.client.stream(self.bodies.parts(item, None), self.timeout_s)
        return result.status == "ok", (result.end_ns - result.start_ns) / 1e9

    async def _passes(self, units: list[WorkUnit]) -> None:
        by_pass: dict[int, list[WorkUnit]] = {}
        for u in units:
            by_pass.setdefault(u.sample_index, []).append(u)
        passes = sorted(by_pass)
        if self.spec.between_passes is None and len(passes) > 1:
            # Nothing to do between passes (--max-requests cycling the suite, say): one stream of requests in
            # pass order. A barrier per pass drained the pipeline and waited for the journal's commit every
            # pass: at 64 in flight over a 100-item suite, 18 requests in flight on average.
            await self._run_units([u for k in passes for u in by_pass[k]])
            if not self.abort_reason:
                self._mark(passes_completed=self.segment.passes_completed + len(passes))
            return
        for n, k in enumerate(passes):
            await self._run_units(by_pass[k])
            if self.abort_reason:
                return
            self._mark(passes_completed=self.segment.passes_completed + 1)
            if self.spec.between_passes is not None and n + 1 < len(passes):
                note = self.spec.between_passes(k)
                self._mark(between_passes_calls=self.segment.between_passes_calls + 1,
                           between_passes_log=(*self.segment.between_passes_log, {"after_pass": k, **(note or {})}))

    def check_server(self) -> None:
        if self.launched is not None and self.launched.exit_code() is not None:
            self.abort_reason = (f"the server died (exit code {self.launched.exit_code()}); last lines of its log:\n"
                                 f"{log_tail(self.launched.log_path)}")
        elif self.launched is None and not self.server.alive():
            self.abort_reason = f"the server at {self.server.base_url} stopped answering /health"

    async def _one(self, unit: WorkUnit, sem: asyncio.Semaphore) -> None:
        """One unit with its retries. Started holding a slot of `sem` (the dispatcher took it when the
        request was due); a slot is a request in flight: journaling and backoff do not hold one."""
        s = self.spec.settings
        seed = request_seed(s.seed, unit)
        for attempt in range(1, s.max_retries + 2):
            if attempt > 1:
                await sem.acquire()
            try:
                if self.abort_reason:
                    return
                # Built in the slot (once; retries reuse it): never every waiting request's body at once.
                body = self.bodies.parts(unit.item, seed)
                result = await self.client.stream(body, self.timeout_s)
            finally:
                sem.release()
            if result.status == "ok" and result.model and result.model != self.server.model:
                wrong = f"answered as model '{result.model}', asked '{self.server.model}'"
                result = StreamResult(**{**asdict(result), "status": "wrong_model", "error": wrong})
            will_retry = result.transient and attempt <= s.max_retries
            record = to_record(self.run_id, unit, attempt, seed, result, self.clock, self.segment.index)
            record = await self.journal.append(record)  # on disk (group commit) before anything else happens
            if not will_retry:
                self.bodies.forget(unit.item, seed)
                self.finished += 1
                self.failed += record.status != "ok"
                self.progress.advance(record)
                self._check_failure_share()
                return
            if result.status in ("connection", "timeout"):
                self.check_server()
            await asyncio.sleep(retry_delay_s(result, attempt))

    def _check_failure_share(self) -> None:
        s = self.spec.settings
        if self.finished >= 10 and self.failed / self.finished > s.max_failure_share:
            self.check_server()  # failures because the server died: say that, not the failure count
            if self.abort_reason is None:
                self.abort_reason = (f"{self.failed} of {self.finished} requests failed, more than the allowed "
                                     f"{s.max_failure_share:.0%} (--max-failure-share)")

    async def _run_units(self, units: list[WorkUnit]) -> None:
        """Dispatch and supervise. The dispatcher walks the units in order, waits for each one's send
        time (the arrival process) and a free slot, and only then starts its task: at most
        `concurrency` requests (and those still journaling) have a task, so a long run neither holds
        a task per request nor spends a burst of event-loop time on them when it starts (which
        delayed the first wave's timestamps). The supervisor journals the power samples, checks the
        server and the limits at least 4 times a second, and at once when a task fails, an abort is
        asked for, or the last request ends; it costs nothing per request."""
        s = self.spec.settings
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(s.concurrency)
        deadline = None if s.max_duration_s is None else self.started_s + s.max_duration_s
        live: set[asyncio.Task] = set()
        completed: list[asyncio.Task] = []
        wake = asyncio.Event()

        def finished(task: asyncio.Task) -> None:
            live.discard(task)
            completed.append(task)
            if task.cancelled() or task.exception() is not None or self.abort_reason or \
                    (not live and dispatcher.done()):
                wake.set()

        async def dispatch() -> None:
            for unit in units:
                # The arrival process; False: --duration is over, and so for every later unit.
                if self.abort_reason or not await self.pacer.wait_turn(self.index[id(unit)]):
                    return
                await sem.acquire()
                if self.abort_reason:
                    sem.release()
                    return
                task = loop.create_task(self._one(unit, sem))
                live.add(task)
                task.add_done_callback(finished)

        dispatcher = loop.create_task(dispatch())
        dispatcher.add_done_callback(lambda _: wake.set())
        ticker = loop.create_task(_tick(wake, SUPERVISE_PERIOD_S))
        last_drain_s = time.monotonic()
        try:
            while True:
                await wake.wait()
                wake.clear()
                done, completed[:] = list(completed), []
                if deadline is not None and time.monotonic() >= deadline and self.abort_reason is None:
                    self.abort_reason = f"the run reached its wall-clock limit (--max-duration-s {s.max_duration_s:g})"
                now = time.monotonic()
                if now - last_drain_s >= POWER_DRAIN_PERIOD_S:  # power journal (fsynced) on the writer thread
                    last_drain_s = now
                    samples = self.meter.drain()
                    self.live.add(samples)
                    if samples:
                        await loop.run_in_executor(self.journal.executor, self.store.append_power, samples)
                if self.launched is not None and self.abort_reason is None:
                    self.check_server()
                if self.abort_reason:
                    return
                for t in done:
                    t.result()  # a bug in the loop (or a full disk) must surface, not vanish
                if dispatcher.done():
                    dispatcher.result()
                    if not live:
                        return
        finally:
            ticker.cancel()
            dispatcher.cancel()
            for t in list(live):
                t.cancel()
            await asyncio.gather(dispatcher, *live, return_exceptions=True)


async def _tick(event: asyncio.Event, period_s: float) -> None:
    while True:
        await asyncio.sleep(period_s)
        event.set()
