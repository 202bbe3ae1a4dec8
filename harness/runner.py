"""One run end to end: suite → server → meter → requests → journals → analysis.

The loop writes each request to the journal within 10 ms of its end (group commit on a writer
thread; power samples once a second), so whatever stops the run -- a dead server, a signal, too
many failures -- loses nothing already measured but that last instant; the run is then marked
incomplete and can be resumed."""

from __future__ import annotations

import asyncio
import os
import platform
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import harness
from harness.analysis import finalize_run
from harness.client import TRANSIENT_STATUSES, ChatClient, RequestBuilder, StreamResult, build_request, retry_delay_s
from harness.config import RunSettings, SuiteSpec, Variant, default_models_dir
from harness.energy.attribute import PhaseWeights
from harness.energy.meters import PowerMeter, open_meter
from harness.errors import ConfigError, HarnessError, RunAborted, ServerError
from harness.load import LagMonitor, Pacer, cycled
from harness.protocol import WarmupReport, warm_up, warmup_items
from harness.records import RequestRecord, RunClock
from harness.server import LaunchedServer, ServerHandle, attach, log_tail, stop_leftover
from harness.store import RunStore, journal_line, read_json, read_requests
from harness.suite import Suite, SuiteItem, load_suite

COMMIT_INTERVAL_S = 0.01  # the journal's group commit: records finished within this share one fsync
POWER_DRAIN_PERIOD_S = 1.0  # power samples go to their journal this often while requests run
IDLE_AFTER_SETTLE_S = 3.0  # after the last request, before the idle-after window opens


class Progress(Protocol):
    """Observer of a run's progress (rich bar on a terminal, plain lines otherwise)."""

    def begin(self, total: int, description: str) -> None: ...
    def advance(self, record: RequestRecord) -> None: ...
    def message(self, text: str) -> None: ...
    def end(self) -> None: ...


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


@dataclass(frozen=True)
class WorkUnit:
    position: int  # index of the item in the suite
    item: SuiteItem
    sample_index: int

    @property
    def key(self) -> tuple[str, int]:
        return (self.item.id, self.sample_index)


def ensure_dummy_model(variant: Variant, progress: Progress) -> str:
    """The generated model folder of a dummy-weight variant, made with the server's Python."""
    folder = default_models_dir() / variant.dummy_model.folder_name()
    if (folder / "DUMMY_MODEL.json").exists():
        return str(folder)
    generator = Path(__file__).resolve().parent.parent / "benchmarks" / "models" / "make_gemma4_dummy.py"
    python = variant.python or sys.executable
    progress.message(f"generating dummy model folder {folder}")
    result = subprocess.run([python, str(generator), str(folder), "--preset", variant.dummy_model.preset,
                             "--layout", variant.dummy_model.layout], capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ConfigError(f"cannot generate the dummy model folder {folder}: {tail[0]}")
    return str(folder)


def resolve_model_path(variant: Variant, dummy_weights: bool, progress: Progress) -> tuple[str, bool]:
    """(model path, load with dummy weights?)"""
    if variant.dummy_only or dummy_weights:
        if variant.dummy_model is None:
            raise ConfigError(f"{variant.source}: --dummy-weights needs a dummy_model block in the variant")
        return ensure_dummy_model(variant, progress), True
    if not variant.model:
        raise ConfigError(f"{variant.source}: key 'model' is not set; pass --model-path, set the variant's "
                          f"model_env variable, or use --dummy-weights")
    if variant.model.startswith(("/", ".", "~")) and not Path(variant.model).expanduser().exists():
        raise ConfigError(f"{variant.source}: model path {variant.model} does not exist")
    return str(Path(variant.model).expanduser()) if variant.model.startswith("~") else variant.model, False


def host_facts() -> dict:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
               platform.processor())
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cpu_count": os.cpu_count()}


def finished_keys(requests) -> set[tuple[str, int]]:
    """(item, sample) pairs whose last attempt is final: answered, or failed for a reason a
    retry would not fix. Items cut off by a crash or a signal are missing and will be re-sent."""
    final = requests[~requests["retried"]]
    return {(r.item_id, int(r.sample_index)) for r in final.itertuples() if r.status not in TRANSIENT_STATUSES}


def work_units(suite: Suite, samples: int, done: set[tuple[str, int]], max_requests: int | None = None
               ) -> list[WorkUnit]:
    """Every item `samples` times, or `max_requests` requests cycling through the items."""
    units = [WorkUnit(pos, suite.items[pos], k) for pos, k in cycled(len(suite.items), max_requests, samples)]
    return [u for u in units if u.key not in done]


def request_seed(base: int, unit: WorkUnit) -> int:
    """Distinct per item and per repeat, reproducible from --seed."""
    return base + unit.sample_index * 1_000_003 + unit.position


def to_record(run_id: str, unit: WorkUnit, attempt: int, seed: int, result: StreamResult,
              clock: RunClock) -> RequestRecord:
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
        cached_tokens=result.cached_tokens, reasoning_text=result.reasoning_text,
        reasoning_tokens=result.reasoning_tokens, anomaly=result.anomaly,
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

    async def append(self, record: RequestRecord) -> None:
        """Returns once the record is on disk."""
        done = asyncio.get_running_loop().create_future()
        # Serialized here, not on the writer thread: a thread running Python code holds the GIL, and the
        # event loop would wait for it (up to the 5 ms switch interval) to read other streams' bytes.
        self.pending.append((journal_line(record), done))
        if self.flushing is None:
            self.flushing = asyncio.get_running_loop().create_task(self._flush())
        await done

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


class _Loop:
    """The request loop of one run segment."""

    def __init__(self, spec: RunSpec, run_id: str, server: ServerHandle, meter: PowerMeter, store: RunStore,
                 clock: RunClock, progress: Progress, launched: LaunchedServer | None, max_tokens: int):
        self.spec, self.run_id, self.server, self.meter = spec, run_id, server, meter
        self.store, self.clock, self.progress, self.launched = store, clock, progress, launched
        self.max_tokens = max_tokens
        s = spec.settings
        self.timeout_s = s.request_timeout_s or 30.0 + 0.5 * max_tokens
        self.finished = self.failed = 0
        self.abort_reason: str | None = None
        # Pools its connections per event loop (warm-up and measured phase run in two loops).
        self.client = ChatClient(server.base_url, spec.api_key)
        self.bodies = RequestBuilder(server.model, spec.settings.sampling, max_tokens)
        self.lag = LagMonitor()  # the client's own load while the measured phase runs
        self.started_s = time.monotonic()

    def check_server(self) -> None:
        if self.launched is not None and self.launched.exit_code() is not None:
            self.abort_reason = (f"the server died (exit code {self.launched.exit_code()}); last lines of its log:\n"
                                 f"{log_tail(self.launched.log_path)}")
        elif self.launched is None and not self.server.alive():
            self.abort_reason = f"the server at {self.server.base_url} stopped answering /health"

    async def one(self, index: int, unit: WorkUnit, sem: asyncio.Semaphore) -> None:
        s = self.spec.settings
        seed = request_seed(s.seed, unit)
        if not await self.pacer.wait_turn(index):  # the arrival process; False: --duration is over
            return
        for attempt in range(1, s.max_retries + 2):
            if self.abort_reason:
                return
            async with sem:  # a slot is a request in flight; journaling and backoff do not hold one
                result = await self.client.stream(self.bodies.body(unit.item, seed), self.timeout_s)
            if result.status == "ok" and result.model and result.model != self.server.model:
                wrong = f"answered as model '{result.model}', asked '{self.server.model}'"
                result = StreamResult(**{**asdict(result), "status": "wrong_model", "error": wrong})
            will_retry = result.transient and attempt <= s.max_retries
            record = to_record(self.run_id, unit, attempt, seed, result, self.clock)
            await self.journal.append(record)  # on disk before anything else happens to this unit
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
            self.abort_reason = (f"{self.failed} of {self.finished} requests failed, more than the allowed "
                                 f"{s.max_failure_share:.0%} (--max-failure-share)")

    async def warmup(self, items: list[SuiteItem]) -> WarmupReport:
        """Noise twins of suite items, at the run's concurrency, until latency settles (harness.protocol).
        The client pools connections per event loop: the warm-up's asyncio.run has its own."""
        builder = RequestBuilder(self.server.model, self.spec.settings.sampling, self.max_tokens)

        async def send(item: SuiteItem) -> tuple[bool, float]:
            result = await self.client.stream(builder.body(item, None), self.timeout_s)
            return result.status == "ok", (result.end_ns - result.start_ns) / 1e9

        try:
            return await warm_up(send, items, self.spec.settings.concurrency)
        finally:
            await self.client.close()

    async def run(self, units: list[WorkUnit]) -> None:
        s = self.spec.settings
        self.journal = JournalWriter(self.store)
        self.pacer = Pacer(s.load(), len(units))
        deadline = None if s.max_duration_s is None else self.started_s + s.max_duration_s
        sem = asyncio.Semaphore(s.concurrency)
        tasks = [asyncio.create_task(self.one(i, u, sem)) for i, u in enumerate(units)]
        try:
            async with self.lag:
                await self._wait(tasks, deadline)
        finally:
            await self.client.close()
            self.journal.close()

    async def _wait(self, tasks: list[asyncio.Task], deadline: float | None) -> None:
        """Supervise the run: after each finished request and at least once a second, drain the meter,
        check the server and the limits. Finished tasks are handed over by their done-callbacks, so
        supervising costs O(1) per request (asyncio.wait over all tasks would cost O(tasks) each time)."""
        completed: list[asyncio.Task] = []
        wake = asyncio.Event()

        def finished(task: asyncio.Task) -> None:
            completed.append(task)
            wake.set()

        for t in tasks:
            t.add_done_callback(finished)
        loop = asyncio.get_running_loop()
        ticker = loop.create_task(_tick(wake, POWER_DRAIN_PERIOD_S))
        left, last_drain_s = len(tasks), time.monotonic()
        try:
            while left:
                await wake.wait()
                wake.clear()
                done, completed[:] = list(completed), []
                left -= len(done)
                if deadline is not None and time.monotonic() >= deadline and self.abort_reason is None:
                    self.abort_reason = (f"the run reached its wall-clock limit (--max-duration-s "
                                         f"{self.spec.settings.max_duration_s:g})")
                now = time.monotonic()
                if now - last_drain_s >= POWER_DRAIN_PERIOD_S:  # power journal (fsynced) on the writer thread
                    last_drain_s = now
                    samples = self.meter.drain()
                    if samples:
                        await loop.run_in_executor(self.journal.executor, self.store.append_power, samples)
                if self.launched is not None and self.abort_reason is None:
                    self.check_server()
                if self.abort_reason:
                    for t in tasks:
                        t.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    return
                for t in done:
                    t.result()  # a bug in the loop must surface, not vanish
        finally:
            ticker.cancel()


async def _tick(event: asyncio.Event, period_s: float) -> None:
    while True:
        await asyncio.sleep(period_s)
        event.set()


def _describe(variant: Variant, model_path: str | None, dummy: bool) -> dict:
    if model_path is None and dummy:
        model_path = f"dummy weights ({variant.dummy_model.folder_name()})"
    return {"name": variant.name, "source": str(variant.source), "model": model_path or variant.model,
            "dummy_weights": dummy, "served_model_name": variant.served_model_name, "vllm": variant.vllm,
            "env": variant.env, "attached": False}


def _sampling_sent(request: dict) -> dict:
    sent = {k: request[k] for k in ("temperature", "top_p", "max_tokens") if k in request}
    sent.update(request.get("extra_body", {}))
    return sent


def _open_run(spec: RunSpec, suite: Suite, max_tokens: int) -> tuple[RunStore, dict, set[tuple[str, int]]]:
    """The run folder (new, or the one being resumed), its manifest, and what is already done."""
    s = spec.settings
    if spec.resume_dir is not None:
        store = RunStore.open_resume(spec.resume_dir)
        manifest = read_json(spec.resume_dir / "manifest.json")
        if manifest["suite"]["hash"] != suite.content_hash:
            store.close()
            raise ConfigError(f"{spec.resume_dir}: the suite changed since the run started (hash differs)")
        return store, manifest, finished_keys(read_requests(spec.resume_dir))
    store = RunStore.open_new(s.results_dir, s.run_id)
    probe_request = build_request(suite.items[0], "?", s.sampling, max_tokens, s.seed)
    manifest = {
        "run_id": s.run_id, "status": "running", "harness_version": harness.__version__,
        "created_wall_s": time.time(), "host": host_facts(),
        "suite": {"name": spec.suite.name, "source": str(spec.suite.source), "hash": suite.content_hash,
                  "items": len(suite.items), "tasks": suite.task_counts(), "limit": s.limit},
        "sampling": asdict(s.sampling), "sampling_sent": _sampling_sent(probe_request),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(s).items() if k != "sampling"},
        "phase_weights": asdict(spec.weights), "segments": [],
    }
    return store, manifest, set()


def _connect(spec: RunSpec, store: RunStore, progress: Progress) -> tuple[ServerHandle, LaunchedServer | None, dict]:
    """Attach to the server, or launch the variant's; returns what the manifest says of it."""
    if spec.base_url:
        server = attach(spec.base_url, spec.model, spec.api_key)
        # Attached to a server someone started for a known variant: record what it declares.
        block = {**_describe(spec.variant, None, spec.dummy_weights), "attached": True} if spec.variant \
            else {"name": "attached", "attached": True}
        return server, None, block
    variant = spec.variant
    model_path, dummy = resolve_model_path(variant, spec.dummy_weights, progress)
    progress.message(f"starting vLLM for variant '{variant.name}' (log: {store.dir / 'server.log'})")
    launched = LaunchedServer(variant, model_path, store.dir, load_format_dummy=dummy)
    return launched.__enter__(), launched, _describe(variant, model_path, dummy)


def execute(spec: RunSpec, progress: Progress) -> Path:
    """Run (or resume) a benchmark; returns the run folder. Raises RunAborted when it stops early."""
    s = spec.settings
    suite = load_suite(spec.suite, s.limit)
    max_tokens = s.sampling.max_tokens or spec.suite.max_tokens
    store, manifest, done = _open_run(spec, suite, max_tokens)
    if spec.resume_dir is not None and (note := _stop_leftover(manifest, store)):
        progress.message(note)  # under the run's lock: no live bench of this run owns that server
    run_id = manifest["run_id"]
    units = work_units(suite, s.samples, done, s.max_requests)
    clock = RunClock.now()
    segment: dict = {"started_wall_s": time.time(), "clock_wall_minus_mono_ns": clock.wall_minus_mono_ns}
    manifest["status"] = "running"
    store.write_manifest(manifest)

    launched: LaunchedServer | None = None
    meter: PowerMeter | None = None
    previous_handlers = {}
    try:
        previous_handlers[signal.SIGTERM] = signal.signal(signal.SIGTERM, _raise_interrupt)
        previous_handlers[signal.SIGHUP] = signal.signal(signal.SIGHUP, _raise_interrupt)  # a closed terminal
        server, launched, variant_block = _connect(spec, store, progress)
        manifest.setdefault("variant", variant_block)
        manifest["server"] = server.manifest_block()
        meter = open_meter(s.energy, tensor_parallel_size=(spec.variant.tensor_parallel_size if spec.variant else 1),
                           rate_hz=s.sample_rate_hz, clock=clock, trace=s.power_trace,
                           environ={**os.environ, **(spec.variant.env if spec.variant else {})})
        manifest["meter"] = meter.info.to_dict()
        store.write_manifest(manifest)
        loop = _Loop(spec, run_id, server, meter, store, clock, progress, launched, max_tokens)
        meter.start()
        if s.idle_s > 0 and meter.info.kind != "none":
            progress.message(f"measuring idle power for {s.idle_s:.0f} s")
            idle_start = time.monotonic_ns()
            time.sleep(s.idle_s)
            segment["idle_window_ns"] = [idle_start, time.monotonic_ns()]
        store.append_power(meter.drain())
        if s.warmup:
            progress.message(f"warm-up: up to {s.warmup} noise-twin request(s) at concurrency {s.concurrency}, "
                             f"until latency settles; not recorded")
            report = asyncio.run(loop.warmup(warmup_items(suite.items, s.warmup, seed=s.seed)))
            segment["warmup"] = report.to_dict()
            progress.message(f"warm-up: {report.requests} request(s) in {report.rounds} round(s), "
                             f"{'settled' if report.settled else 'NOT settled'}")
        store.append_power(meter.drain())
        progress.begin(len(units), f"{run_id}")
        segment["requests_started_ns"] = time.monotonic_ns()
        asyncio.run(loop.run(units))
        segment["requests_ended_ns"] = time.monotonic_ns()
        segment["client_load"] = loop.lag.result().to_dict()
        progress.end()
        idle_after_s = s.idle_s if s.idle_after_s is None else s.idle_after_s
        if idle_after_s > 0 and meter.info.kind != "none" and not loop.abort_reason:
            # A GPU may idle higher after work than before it: measure idle again once it has settled.
            progress.message(f"measuring idle power after the run for {idle_after_s:.0f} s "
                             f"(after {IDLE_AFTER_SETTLE_S:.0f} s to settle)")
            time.sleep(IDLE_AFTER_SETTLE_S)
            idle_start = time.monotonic_ns()
            time.sleep(idle_after_s)
            segment["idle_after_window_ns"] = [idle_start, time.monotonic_ns()]
            store.append_power(meter.drain())
        if loop.abort_reason:
            raise RunAborted(loop.abort_reason)
        manifest["status"] = "complete"
    except (KeyboardInterrupt, RunAborted, ServerError) as exc:
        signal.signal(signal.SIGINT, _exit_now(launched))  # a second Ctrl-C: stop at once, no orphan
        cause = "interrupted (signal)" if isinstance(exc, KeyboardInterrupt) else str(exc).splitlines()[0]
        manifest["status"] = "incomplete"
        manifest["incomplete_cause"] = cause
        if launched is not None:
            manifest["server_log_tail"] = log_tail(launched.log_path)
        if isinstance(exc, ServerError) and not (store.dir / "requests.jsonl").exists():
            manifest["status"] = "failed"  # the server never came up: nothing to resume
            raise
        raise RunAborted(f"run {run_id} stopped early: {cause}. What was measured is in {store.dir}; "
                         f"continue with: bench run --resume {store.dir}") from None
    except HarnessError as exc:  # bad input found after the folder was made (meter, model, ...)
        manifest["status"] = "failed"
        manifest["incomplete_cause"] = str(exc).splitlines()[0]
        raise
    finally:
        if meter is not None:
            store.append_power(meter.stop())
            manifest["meter"] = meter.info.to_dict()
        if launched is not None:
            launched.stop()
        segment["ended_wall_s"] = time.time()
        manifest["segments"].append(segment)
        store.write_manifest(manifest)
        if (store.dir / "requests.jsonl").exists():
            finalize_run(store.dir)
        store.close()
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return store.dir


def _stop_leftover(manifest: dict, store: RunStore) -> str | None:
    try:
        return stop_leftover(manifest.get("server"))
    except ServerError:
        store.close()
        raise


def _raise_interrupt(signum, frame):
    # As a Ctrl-C: inside asyncio.run that cancels the request loop cleanly (a KeyboardInterrupt
    # raised here would land inside a task and be logged with a traceback); elsewhere it raises.
    signal.raise_signal(signal.SIGINT)


def _exit_now(launched: LaunchedServer | None):
    def handler(signum, frame):
        if launched is not None:
            launched.kill_now()
        os._exit(130)
    return handler


def resume_spec(run_dir: Path, *, base_url: str | None, model: str | None, api_key: str | None) -> RunSpec:
    """The spec of an interrupted run, rebuilt from its manifest, to finish its missing items."""
    from harness.config import Sampling, load_suite_spec, load_variant

    manifest = read_json(run_dir / "manifest.json")
    if manifest.get("status") == "complete":
        raise ConfigError(f"{run_dir} is already complete; nothing to resume")
    saved = dict(manifest["settings"])
    for key in ("results_dir", "power_trace"):
        saved[key] = Path(saved[key]) if saved.get(key) else None
    settings = RunSettings(**{**saved, "sampling": Sampling(**manifest["sampling"])})
    variant_block = manifest.get("variant") or {}
    variant = None
    if base_url is None and variant_block.get("attached"):
        raise ConfigError(f"{run_dir} was attached to a server; resume it with --base-url URL")
    if variant_block.get("source"):
        variant = load_variant(variant_block["source"])
    return RunSpec(suite=load_suite_spec(manifest["suite"]["source"]), settings=settings, variant=variant,
                   base_url=base_url, model=model or (manifest.get("server") or {}).get("model") if base_url else None,
                   api_key=api_key, dummy_weights=bool(variant_block.get("dummy_weights")),
                   weights=PhaseWeights(**manifest.get("phase_weights", {})), resume_dir=run_dir)
