"""One run end to end: suite → server → meter → work loop → journals → finalisation.

`execute` is one `contextlib.ExitStack` over the run folder's lock, the signal handlers, the
server and the meter: whatever stops the run (a dead server, a signal, a full disk, a bug), the
meter and the server are stopped, what was measured is on disk, the manifest says why the run
ended, and "complete" is written only after the tables and summary exist. The work loop itself
lives in `loop.py`."""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import harness
from harness.client import build_request
from harness.config import (
    PROJECT_ROOT,
    Variant,
    default_models_dir,
    load_suite_spec,
    load_variant,
)
from harness.energy.attribute import PhaseWeights
from harness.energy.meters import PowerMeter, open_meter
from harness.errors import ConfigError, HarnessError, ResultsError, RunAborted, ServerError
from harness.finalize import finalize_run
from harness.loop import (
    RunSpec,
    WorkLoop,
    finished_keys,
    max_tokens_for,
    warmup_plan,
    work_units,
)
from harness.progress import Progress
from harness.protocol import reset_caches
from harness.records import EnergyMode, RunClock, RunStatus
from harness.results import HostInfo, Manifest, Segment, ServerInfo, SuiteInfo, VariantInfo, settings_json
from harness.server import LaunchedServer, ServerHandle, attach, log_tail, stop_leftover
from harness.store import (
    RunStore,
    has_request_journal,
    is_disk_full,
    read_manifest,
    read_requests,
    require_run_dir,
)
from harness.suite import Suite, load_suite

__all__ = ["Progress", "RunSpec", "execute", "resolve_model_path", "resume_spec"]

# Options that shape what a segment measures; recorded per segment.
SEGMENT_SETTINGS = ("concurrency", "warmup", "samples", "limit", "max_retries", "request_timeout_s", "idle_s",
                    "idle_after_s", "energy", "sample_rate_hz", "max_failure_share")


def ensure_dummy_model(variant: Variant, progress: Progress) -> str:
    """The generated model folder of a dummy-weight variant, made with the server's Python."""
    folder = default_models_dir() / variant.dummy_model.folder_name()
    if (folder / "DUMMY_MODEL.json").exists():
        return str(folder)
    generator = PROJECT_ROOT / "benchmarks" / "models" / "make_gemma4_dummy.py"  # BENCH_HOME, or the checkout
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


def host_facts() -> HostInfo:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
               platform.processor())
    return HostInfo(platform=platform.platform(), python=platform.python_version(), cpu=cpu,
                    cpu_count=os.cpu_count())


def _describe(variant: Variant, model_path: str | None, dummy: bool, attached: bool = False) -> VariantInfo:
    if model_path is None and dummy:
        model_path = f"dummy weights ({variant.dummy_model.folder_name()})"
    return VariantInfo(name=variant.name, source=str(variant.source), model=model_path or variant.model,
                       dummy_weights=dummy, served_model_name=variant.served_model_name, vllm=dict(variant.vllm),
                       env=dict(variant.env), attached=attached)


def _sampling_sent(request: dict) -> dict:
    sent = {k: request[k] for k in ("temperature", "top_p", "max_tokens") if k in request}
    sent.update(request.get("extra_body", {}))
    return sent


def _open_folder(spec: RunSpec, suite: Suite) -> tuple[RunStore, Manifest, set[tuple[str, int]]]:
    """The run folder (new, or the one being resumed), its manifest, and what is already done."""
    s = spec.settings
    if spec.resume_dir is not None:
        store = RunStore.open_resume(spec.resume_dir)
        try:
            manifest = read_manifest(spec.resume_dir)
            if manifest.complete:
                raise ConfigError(f"{spec.resume_dir} is already complete; nothing to resume")
            if manifest.suite.hash != suite.content_hash:
                raise ConfigError(f"{spec.resume_dir}: the suite changed since the run started (hash differs)")
            done = finished_keys(read_requests(spec.resume_dir))
        except BaseException:
            store.close()
            raise
        return store, manifest, done
    store = RunStore.open_new(s.results_dir, s.run_id)
    probe_request = build_request(suite.items[0], "?", s.sampling, max_tokens_for(spec), s.seed)
    manifest = Manifest(
        run_id=s.run_id, status=RunStatus.RUNNING, harness_version=harness.__version__,
        created_wall_s=time.time(), host=host_facts(),
        suite=SuiteInfo(name=spec.suite.name, source=str(spec.suite.source), hash=suite.content_hash,
                        items=len(suite.items), tasks=suite.task_counts(), limit=s.limit),
        sampling=asdict(s.sampling), sampling_sent=_sampling_sent(probe_request), settings=settings_json(s),
        phase_weights=asdict(spec.weights),
    )
    return store, manifest, set()


def _connect(spec: RunSpec, store: RunStore, progress: Progress,
             resources: contextlib.ExitStack) -> tuple[ServerHandle, LaunchedServer | None, VariantInfo]:
    """Attach to the server, or launch the variant's (stopped by `resources`, whatever happens)."""
    if spec.base_url:
        server = attach(spec.base_url, spec.model, spec.api_key)
        # Attached to a server someone started for a known variant: record what it declares.
        block = _describe(spec.variant, None, spec.dummy_weights, attached=True) if spec.variant \
            else VariantInfo(name="attached", attached=True)
        return server, None, block
    variant = spec.variant
    model_path, dummy = resolve_model_path(variant, spec.dummy_weights, progress)
    progress.message(f"starting vLLM for variant '{variant.name}' (log: {store.dir / 'server.log'})")
    launched = LaunchedServer(variant, model_path, store.dir, load_format_dummy=dummy)
    return resources.enter_context(launched), launched, _describe(variant, model_path, dummy)


class _ManifestJournal:
    """The manifest of the run in flight, rewritten (atomically) at every change."""

    def __init__(self, store: RunStore, manifest: Manifest):
        self.store, self.manifest = store, manifest

    def update(self, **changes) -> None:
        self.manifest = replace(self.manifest, **changes)
        self.store.write_manifest(self.manifest)

    def segment(self, segment: Segment) -> None:
        self.manifest = self.manifest.with_segment(segment)
        self.store.write_manifest(self.manifest)

    def current(self, index: int) -> Segment:
        return next(s for s in self.manifest.segments if s.index == index)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # each ends a run as a Ctrl-C does


@contextlib.contextmanager
def _handling(handlers: dict):
    """`handlers` (signal → handler) in force inside; the previous ones come back on leaving."""
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _signals():
    """SIGTERM and SIGHUP end a run like Ctrl-C; the previous handlers come back afterwards."""
    # A process started in the background of a script (cron, nohup … &) inherits SIGINT ignored, and
    # Python then installs no handler: Ctrl-C, and SIGTERM/SIGHUP (which end the run as a Ctrl-C),
    # would be lost. The run installs its own.
    return _handling({signal.SIGINT: signal.default_int_handler, signal.SIGTERM: _raise_interrupt,
                      signal.SIGHUP: _raise_interrupt})  # SIGHUP: a closed terminal


@contextlib.contextmanager
def _stop_signals_deferred():
    """SIGINT, SIGTERM and SIGHUP are noted inside, and the first is raised again, through the handlers
    in force, on leaving. (Noted by Python-level handlers, which always run on the main thread: a mask
    would hold back only the main thread's signals, and a Ctrl-C goes to any thread of the process.)"""
    noted: list[int] = []
    try:
        with _handling({sig: lambda signum, frame: noted.append(signum) for sig in STOP_SIGNALS}):
            yield
    finally:
        if noted:
            signal.raise_signal(noted[0])


def _server_info(server: ServerHandle) -> ServerInfo:
    """What the manifest records of the server (a resumed run's `stop_leftover` reads `process` back)."""
    return ServerInfo(base_url=server.base_url, model=server.model, launched=server.launched,
                      command=server.command, env_overrides=server.env_overrides, vllm_version=server.vllm_version,
                      pid=server.pid, process=server.process)


def _measure(spec: RunSpec, suite: Suite, journal: _ManifestJournal, segment: Segment, done: set,
             progress: Progress, clock: RunClock, resources: contextlib.ExitStack) -> None:
    s = spec.settings
    server, launched, variant_block = _connect(spec, journal.store, progress, resources)
    # A Ctrl-C while the server stops kills its group at once (no orphan); see _ctrl_c_while_stopping.
    resources.push(_arm_ctrl_c_while_stopping(launched))
    journal.update(variant=journal.manifest.variant or variant_block,
                   server=_server_info(server))
    if launched is not None:
        resources.callback(lambda: journal.update(server_log_tail=log_tail(launched.log_path)))
    meter = open_meter(s.energy, tensor_parallel_size=(spec.variant.tensor_parallel_size if spec.variant else 1),
                       rate_hz=s.sample_rate_hz, clock=clock, trace=s.power_trace,
                       environ={**os.environ, **(spec.variant.env if spec.variant else {})})
    journal.update(meter=meter.info)
    meter.start()
    resources.callback(_stop_meter, meter, journal)
    if s.samples > 1 and spec.between_passes is None:
        spec = replace(spec, between_passes=_cache_reset(server, spec.api_key, progress))
    loop = WorkLoop(spec, journal.manifest.run_id, segment, server, meter, journal.store, clock, progress, launched,
                    on_phase=journal.segment)
    units = work_units(suite, s.samples, done, s.max_requests)
    loop.run(units, warmup_plan(spec, suite) if s.warmup else ([], "none"))
    if loop.abort_reason:
        raise RunAborted(loop.abort_reason)


def _cache_reset(server: ServerHandle, api_key: str | None, progress: Progress) -> Callable[[int], dict]:
    """Between the passes of `--samples K`: reset the server's caches, so every pass is first-seen
    (harness.protocol). Where the server offers no reset, the analysis takes energy from the first
    pass only (finalize.first_pass_only); quality is scored on all K either way."""
    def between_passes(k: int) -> dict:
        reset = reset_caches(server.base_url, api_key)
        progress.message(f"after pass {k + 1}: caches reset ({reset.describe()})")
        return {"cache_reset": reset.routes}
    return between_passes


def _stop_meter(meter: PowerMeter, journal: _ManifestJournal) -> None:
    samples = meter.stop()
    journal.update(meter=meter.info)
    if meter.info.kind == EnergyMode.TRACE and journal.store.has_power():
        return  # a trace file is the whole run's: an earlier segment journaled it already
    journal.store.append_power(samples)


def _outcome(exc: BaseException, journal_exists: bool) -> tuple[RunStatus, str]:
    """How a run that raised `exc` ends: (status, cause)."""
    if is_disk_full(exc):
        return RunStatus.INCOMPLETE, "no space left on device"
    if isinstance(exc, KeyboardInterrupt):
        return RunStatus.INCOMPLETE, "interrupted (signal)"
    if isinstance(exc, ServerError) and not journal_exists:
        return RunStatus.FAILED, str(exc).splitlines()[0]  # the server never came up: nothing to resume
    if isinstance(exc, (RunAborted, ServerError)):
        return RunStatus.INCOMPLETE, str(exc).splitlines()[0]
    if isinstance(exc, HarnessError):  # bad input found after the folder was made (meter, model, ...)
        return RunStatus.FAILED, str(exc).splitlines()[0]
    return RunStatus.INCOMPLETE, f"internal error: {type(exc).__name__}: {exc}"


def execute(spec: RunSpec, progress: Progress) -> Path:
    """Run (or resume) a benchmark; returns the run folder. Raises RunAborted when it stops early
    (the run can then be resumed), or the original error for bad input and internal faults."""
    s = spec.settings  # validated where it was made (RunSettings)
    suite = load_suite(spec.suite, s.limit)
    store, manifest, done = _open_folder(spec, suite)
    clock = RunClock.now()
    with contextlib.ExitStack() as stack:
        stack.callback(store.close)
        if spec.resume_dir is not None and manifest.server is not None and manifest.server.launched \
                and (note := stop_leftover(manifest.server.process)):
            progress.message(note)  # under the run's lock: no live bench of this run owns that server
        stack.enter_context(_signals())
        journal = _ManifestJournal(store, manifest)
        index = max((seg.index for seg in manifest.segments), default=-1) + 1
        settings = {k: v for k, v in settings_json(s).items() if k in SEGMENT_SETTINGS}
        status, cause, error = RunStatus.COMPLETE, None, None
        try:  # from the manifest's first write on, every ending is recorded; the error is raised again below
            journal.update(status=RunStatus.RUNNING, incomplete_cause=None)
            journal.segment(Segment(index=index, started_wall_s=time.time(),
                                    clock_wall_minus_mono_ns=clock.wall_minus_mono_ns, settings=settings,
                                    journal_repaired_bytes=dict(store.repaired)))
            with contextlib.ExitStack() as resources:
                # Closed last: once the server has stopped, a Ctrl-C is the run's interrupt again, not an exit.
                resources.callback(signal.signal, signal.SIGINT, signal.getsignal(signal.SIGINT))
                _measure(spec, suite, journal, journal.current(index), done, progress, clock, resources)
        except BaseException as exc:
            status, cause = _outcome(exc, has_request_journal(store.dir))
            error = exc
        with _stop_signals_deferred():  # a Ctrl-C now acts once the ending is written, not halfway through it
            error = _finish(journal, index, status, cause, error)
    if error is None:
        return store.dir
    if isinstance(error, (KeyboardInterrupt, RunAborted, ServerError)) or is_disk_full(error):
        if journal.manifest.status == RunStatus.FAILED:
            raise error
        raise RunAborted(f"run {journal.manifest.run_id} stopped early: {journal.manifest.incomplete_cause}. What "
                         f"was measured is in {store.dir}; continue with: bench run --resume {store.dir}") from error
    raise error


def _finish(journal: _ManifestJournal, index: int, status: RunStatus, cause: str | None,
            error: BaseException | None) -> BaseException | None:
    """Close the segment, build tables and summary, then write the final status. A failure
    here never hides the error that ended the run; it becomes the error only when there was none."""
    try:
        if any(seg.index == index for seg in journal.manifest.segments):  # not when stopped before it began
            journal.segment(replace(journal.current(index), ended_wall_s=time.time(), end_cause=cause))
        if has_request_journal(journal.store.dir):
            try:
                finalize_run(journal.store.dir, status=status)
            except Exception as exc:
                if status == RunStatus.COMPLETE:
                    status = RunStatus.INCOMPLETE
                    cause = ("no space left on device" if is_disk_full(exc)
                             else f"finalisation failed: {type(exc).__name__}: {exc}")
                if error is None:  # measured in full, not analysed: say how to finish, keep the cause
                    error = exc if is_disk_full(exc) else ResultsError(
                        f"run {journal.manifest.run_id}: every request was measured, but the tables could not be "
                        f"built ({type(exc).__name__}: {exc}); the journals are intact: bench reanalyze "
                        f"{journal.store.dir}")
                    error.__cause__ = exc
        journal.update(status=status, incomplete_cause=cause)
    except OSError as exc:  # the manifest itself could not be written (a full disk)
        if error is None:
            error = exc if is_disk_full(exc) else ResultsError(f"cannot write {journal.store.dir}: {exc}")
    return error


def _raise_interrupt(signum, frame):
    # As a Ctrl-C: inside asyncio.run that cancels the request loop cleanly (a KeyboardInterrupt
    # raised here would land inside a task and be logged with a traceback); elsewhere it raises.
    signal.raise_signal(signal.SIGINT)


def _arm_ctrl_c_while_stopping(launched: LaunchedServer | None):
    """An exit callback for the run's resources: installs the SIGINT handler for the server's stop,
    knowing whether the run is being unwound by an interrupt."""
    def arm(exc_type, exc, tb) -> None:  # returns None: the exception unwinding the run goes on
        signal.signal(signal.SIGINT, _ctrl_c_while_stopping(launched, second=isinstance(exc, KeyboardInterrupt)))
    return arm


def _ctrl_c_while_stopping(launched: LaunchedServer | None, *, second: bool):
    """SIGINT (and SIGTERM/SIGHUP, raised as one) while the server stops. After an interrupt it is the
    second Ctrl-C: kill the server's group and exit at once (130). At the end of a run that was not
    interrupted it is the first: kill the group and interrupt, so that the ending is still written."""
    def handler(signum, frame):
        if launched is not None:
            launched.kill_now()
        if second:
            os._exit(130)
        raise KeyboardInterrupt
    return handler


def resume_spec(run_dir: Path, *, base_url: str | None, model: str | None, api_key: str | None) -> RunSpec:
    """The spec of an interrupted run, rebuilt from its manifest, to finish its missing items."""
    run_dir = Path(run_dir)
    require_run_dir(run_dir)
    manifest = read_manifest(run_dir)
    if manifest.complete:
        raise ConfigError(f"{run_dir} is already complete; nothing to resume")
    settings = manifest.run_settings()
    block = manifest.variant
    if base_url is None and block is not None and block.attached:
        raise ConfigError(f"{run_dir} was attached to a server; resume it with --base-url URL")
    variant = load_variant(block.source) if block is not None and block.source else None
    served = manifest.server.model if manifest.server else None
    return RunSpec(suite=load_suite_spec(manifest.suite.source), settings=settings, variant=variant,
                   base_url=base_url, model=(model or served) if base_url else None,
                   api_key=api_key, dummy_weights=bool(block and block.dummy_weights),
                   weights=PhaseWeights(**manifest.phase_weights), resume_dir=run_dir)
