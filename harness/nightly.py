"""`bench nightly`: every night, on the same GPU(s), the baseline and every candidate variant in an
order that cancels drift; gate verdicts, comparison within each GPU, regression alarms against the
history, a night report, and the night's runs appended to the history.

Above the runner, through two seams only: one run = `runner.execute(RunSpec)` (in `_execute_one`),
and finished runs read back with `store.load_run` (in `_rows` and `_gates`). Several GPUs: one lane
per GPU, each a child process (`python -m harness.nightly --lane K`, because the runner owns signal
handlers, which only the main thread of a process may) with `CUDA_VISIBLE_DEVICES` set in the
variant's environment, so the server and the meter see that GPU alone; every lane runs every variant
in its own rotated order.

Exit code: bit flags, OR-ed -- 0 all good, 1 a gate failed, 2 a run failed, 4 a regression flagged."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from harness.config import PROJECT_ROOT, Keys, RunSettings, Sampling, load_suite_spec, load_variant, read_yaml
from harness.energy.meters import visible_gpu_indices
from harness.errors import ConfigError, HarnessError
from harness.history import (
    DEFAULT_URL,
    METRICS,
    History,
    RunRow,
    against_history,
    failed_row,
    judge,
    row_from_run,
)
from harness.progress import for_terminal
from harness.regression import DetectorSettings
from harness.report.nightly_report import write_night_report
from harness.report.trends import history_page, trend_lines
from harness.runner import RunSpec, execute
from harness.scoring.gate import gate, paired_items
from harness.server import log_tail
from harness.store import load_run

EXIT_GATE_FAILED, EXIT_RUN_FAILED, EXIT_REGRESSION = 1, 2, 4
ORDERS = ("abba", "rotation")


# -- configuration ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VariantEntry:
    label: str  # the name this variant has in the night (and the history)
    source: str  # variant name or YAML path
    vllm: dict = field(default_factory=dict)  # keys merged over the variant's vllm block
    env: dict = field(default_factory=dict)
    base_url: str | None = None  # attach to a running server instead of launching one
    model: str | None = None  # served model name when attaching


@dataclass(frozen=True)
class Cooldown:
    within_c: float = 3.0  # back within this many degrees of the night's idle temperature ...
    max_s: float = 600.0  # ... or at most this long
    poll_s: float = 5.0


@dataclass(frozen=True)
class NightConfig:
    source: Path
    name: str
    baseline: VariantEntry
    candidates: tuple[VariantEntry, ...]
    suite: str
    limit: int | None
    samples: int
    concurrency: tuple[int, ...]
    warmup: int
    idle_s: float
    repeats: int
    order: str
    seed: int
    energy: str
    max_tokens: int | None
    ignore_eos: bool
    dummy_weights: bool
    cooldown: Cooldown
    gpus: tuple[str, ...]  # one lane per entry ("0", "1"...); () = one lane, the environment's GPUs
    results_dir: Path
    history_url: str
    metrics: tuple[str, ...]
    gate_threshold: float
    gate_confidence: float
    detector: DetectorSettings

    @property
    def variants(self) -> tuple[VariantEntry, ...]:
        return (self.baseline, *self.candidates)


def _entry(value, where: str) -> VariantEntry:
    if isinstance(value, str):
        return VariantEntry(label=Path(value).stem, source=value)
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a variant name or a mapping, got {type(value).__name__}")
    keys = Keys(value, where)
    source = keys.take("variant", str, required=True)
    entry = VariantEntry(label=keys.take("name", str, default=Path(source).stem), source=source,
                         vllm=keys.take("vllm", dict, default={}), env=keys.take("env", dict, default={}),
                         base_url=keys.take("base_url", str), model=keys.take("model", str))
    keys.finish()
    return entry


def load_night_config(path: Path) -> NightConfig:
    """Validated like variants: every error is one line naming the file and the key."""
    path = Path(path)
    where = str(path)
    keys = Keys(read_yaml(path), where)
    baseline = _entry(keys.take("baseline", (str, dict), required=True), f"{where}: baseline")
    raw_candidates = keys.take("candidates", list, required=True)
    candidates = tuple(_entry(c, f"{where}: candidates[{i}]") for i, c in enumerate(raw_candidates))
    concurrency = keys.take("concurrency", (int, list), default=[1])
    concurrency = tuple(concurrency if isinstance(concurrency, list) else [concurrency])
    cool = Keys(keys.take("cooldown", dict, default={}), f"{where}: cooldown")
    cooldown = Cooldown(within_c=cool.take("within_c", float, default=3.0),
                        max_s=cool.take("max_s", float, default=600.0), poll_s=cool.take("poll_s", float, default=5.0))
    cool.finish()
    gpus = keys.take("gpus", (list, int, str), default=[])
    gpus = tuple(str(g) for g in (gpus if isinstance(gpus, list) else [gpus]))
    th = Keys(keys.take("thresholds", dict, default={}), f"{where}: thresholds")
    gate_threshold = th.take("gate", float, default=0.8)
    gate_confidence = th.take("confidence", float, default=0.95)
    defaults = DetectorSettings()
    detector_args = {name: th.take(name, type(getattr(defaults, name)), default=getattr(defaults, name))
                     for name in ("penalty", "min_nights_after", "recent_nights", "window_nights", "min_history",
                                  "min_change_rel")}
    th.finish()
    metrics = tuple(keys.take("metrics", list, default=["j_per_request", "quality"]))
    config = NightConfig(
        source=path, name=keys.take("name", str, default=path.stem), baseline=baseline, candidates=candidates,
        suite=keys.take("suite", str, default="default"), limit=keys.take("limit", int),
        samples=keys.take("samples", int, default=1), concurrency=concurrency,
        warmup=keys.take("warmup", int, default=2), idle_s=keys.take("idle_s", float, default=10.0),
        repeats=keys.take("repeats", int, default=2), order=keys.take("order", str, default="abba"),
        seed=keys.take("seed", int, default=0), energy=keys.take("energy", str, default="auto"),
        max_tokens=keys.take("max_tokens", int), ignore_eos=keys.take("ignore_eos", bool, default=False),
        dummy_weights=keys.take("dummy_weights", bool, default=False), cooldown=cooldown, gpus=gpus,
        results_dir=Path(keys.take("results_dir", str, default="results/nightly")),
        history_url=keys.take("history", str, default=DEFAULT_URL), metrics=metrics,
        gate_threshold=gate_threshold, gate_confidence=gate_confidence,
        detector=_detector(detector_args, f"{where}: thresholds"),
    )
    keys.finish()
    checks = [
        (not candidates, "candidates: name at least one candidate variant"),
        (len({v.label for v in config.variants}) != len(config.variants), "variant names must differ (key 'name')"),
        (any(not isinstance(c, int) or isinstance(c, bool) or c < 1 for c in concurrency),
         "concurrency: levels must be positive integers"),
        (config.repeats < 1, "repeats: must be ≥ 1"),
        (config.order not in ORDERS, f"order: must be one of {', '.join(ORDERS)}"),
        (any(m not in METRICS for m in metrics), f"metrics: known metrics are {', '.join(METRICS)}"),
        (not 0 < gate_threshold <= 1, "thresholds: gate must be in (0, 1]"),
        (not 0 < gate_confidence < 1, "thresholds: confidence must be in (0, 1)"),
        (cooldown.max_s < 0 or cooldown.poll_s <= 0, "cooldown: max_s must be ≥ 0 and poll_s > 0"),
    ]
    for bad, message in checks:
        if bad:
            raise ConfigError(f"{where}: {message}")
    for entry in config.variants:  # unknown variants fail now, not at 3 a.m.
        if entry.base_url is None:
            load_variant(entry.source)
    load_suite_spec(config.suite)
    _settings(config, "probe", Path("."), 1)  # the run settings' own checks (energy, limit, ...)
    return config


def _detector(args: dict, where: str) -> DetectorSettings:
    try:
        return DetectorSettings(**args)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _settings(config: NightConfig, run_id: str, results_dir: Path, concurrency: int) -> RunSettings:
    return RunSettings(results_dir=results_dir, run_id=run_id, limit=config.limit, concurrency=concurrency,
                       warmup=config.warmup, seed=config.seed, samples=config.samples,
                       sampling=Sampling(max_tokens=config.max_tokens, ignore_eos=config.ignore_eos),
                       energy=config.energy, idle_s=config.idle_s)


# -- the order of a night (pure) ---------------------------------------------------------------------------------

def run_order(labels: list[str], repeats: int, order: str, lane: int = 0, seed: int = 0) -> list[str]:
    """The sequence of variant labels of one lane. "abba": blocks alternate forwards and backwards
    (A B B A A B ...), so a linear drift over the night hits every variant equally; "rotation": each
    block is a seeded shuffle. Lane k starts rotated by k, so GPUs do not all run the baseline first."""
    n = len(labels)
    start = labels[lane % n:] + labels[:lane % n]
    rng = random.Random(seed * 1000 + lane)
    out = []
    for block in range(repeats):
        if order == "abba":
            out += start if block % 2 == 0 else start[::-1]
        else:
            shuffled = list(start)
            rng.shuffle(shuffled)
            out += shuffled
    return out


# -- cooldown ----------------------------------------------------------------------------------------------------

def gpu_temperature_probe(gpu: str | None):
    """A function returning the lane's GPU temperature in °C (None once NVML stops answering), or
    None where there is no NVML or no such GPU: then there is nothing to cool down for."""
    try:
        import pynvml  # looked up when called: a missing binding means no probe, and tests stand one in
    except ImportError:
        return None
    ident = gpu if gpu is not None else visible_gpu_indices(1)[0]  # the GPU the meter will read
    try:
        pynvml.nvmlInit()
        handle = (pynvml.nvmlDeviceGetHandleByIndex(int(ident)) if ident.isdigit()
                  else pynvml.nvmlDeviceGetHandleByUUID(ident))
    except pynvml.NVMLError:
        return None

    def read() -> float | None:
        try:
            return float(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU))
        except pynvml.NVMLError:
            return None
    return read


def cool_down(probe, idle_c: float | None, cooldown: Cooldown, sleep=time.sleep, clock=time.monotonic) -> dict:
    """Wait until the temperature is within `within_c` of the idle value, or `max_s` passed."""
    if probe is None or idle_c is None:
        return {"waited_s": 0.0, "reason": "no temperature sensor"}
    started = clock()
    while True:
        now_c = probe()
        if now_c is None:
            return {"waited_s": clock() - started, "reason": "temperature unreadable"}
        if now_c <= idle_c + cooldown.within_c:
            return {"waited_s": clock() - started, "temperature_c": now_c, "reason": "back near idle"}
        if clock() - started >= cooldown.max_s:
            return {"waited_s": clock() - started, "temperature_c": now_c, "reason": "time limit"}
        sleep(cooldown.poll_s)


# -- one lane ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunOutcome:
    lane: str
    position: int
    label: str
    concurrency: int
    run_id: str
    run_dir: str
    ok: bool
    error: str | None = None
    log_tail: str | None = None
    cooldown: dict | None = None


class _Quiet:
    """Progress observer for lanes: one line per message, no bar."""

    def __init__(self, prefix: str, stream=sys.stderr):
        self.prefix, self.stream = prefix, stream

    def begin(self, total: int, description: str) -> None:
        print(f"{self.prefix} {description}: {total} requests", file=self.stream, flush=True)

    def advance(self, record) -> None:
        pass

    def message(self, text: str) -> None:
        print(f"{self.prefix} {text}", file=self.stream, flush=True)

    def end(self) -> None:
        pass


def _spec(config: NightConfig, entry: VariantEntry, gpu: str | None, settings: RunSettings) -> RunSpec:
    variant = load_variant(entry.source)
    env = {**variant.env, **{k: str(v) for k, v in entry.env.items()}}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu  # the server and the meter see this lane's GPU only
    variant = replace(variant, name=entry.label, vllm={**variant.vllm, **entry.vllm}, env=env)
    # With base_url the run attaches to that server and records the variant it declares.
    return RunSpec(suite=load_suite_spec(config.suite), settings=settings, variant=variant, base_url=entry.base_url,
                   model=entry.model, dummy_weights=config.dummy_weights)


def _execute_one(config: NightConfig, entry: VariantEntry, gpu: str | None, concurrency: int, run_id: str,
                 night_dir: Path, progress) -> tuple[bool, str | None, str | None]:
    """Run one variant; (ok, error, server log tail). Every harness failure is recorded, not raised."""
    try:
        execute(_spec(config, entry, gpu, _settings(config, run_id, night_dir, concurrency)), progress)
        return True, None, None
    except HarnessError as exc:
        # The runner turns Ctrl-C/SIGTERM into RunAborted (raised from the interrupt).
        if any(isinstance(e, KeyboardInterrupt) for e in (exc.__cause__, exc.__context__)):
            raise KeyboardInterrupt from None  # stop the night, not just this run
        tail = log_tail(night_dir / run_id / "server.log") or None
        return False, str(exc).splitlines()[0], tail


def run_lane(config: NightConfig, night_id: str, lane_index: int, progress=None,
             outcomes: list[RunOutcome] | None = None) -> list[RunOutcome]:
    """Every variant at every concurrency level, `repeats` times, in this lane's order; each outcome is
    appended to `outcomes` as it finishes (so an interrupted night still knows what it ran)."""
    gpu = config.gpus[lane_index] if config.gpus else None
    lane = gpu if gpu is not None else ""
    night_dir = config.results_dir / night_id
    labels = [v.label for v in config.variants]
    by_label = {v.label: v for v in config.variants}
    probe = gpu_temperature_probe(gpu) if config.energy not in ("none", "trace") else None
    idle_c = probe() if probe else None
    progress = progress or _Quiet(f"[lane {lane or 0}]")
    outcomes = [] if outcomes is None else outcomes
    position = 0
    for concurrency in config.concurrency:
        for label in run_order(labels, config.repeats, config.order, lane_index, config.seed):
            run_id = f"{night_id}-g{lane or 0}-{position:02d}-{label}-c{concurrency}"
            waited = cool_down(probe, idle_c, config.cooldown) if position else None
            progress.message(f"run {run_id}")
            try:
                ok, error, tail = _execute_one(config, by_label[label], gpu, concurrency, run_id, night_dir, progress)
            except KeyboardInterrupt:  # the interrupted run is recorded (incomplete, resumable), then the night stops
                outcomes.append(RunOutcome(lane, position, label, concurrency, run_id, str(night_dir / run_id), False,
                                           "interrupted", None, waited))
                raise
            outcomes.append(RunOutcome(lane, position, label, concurrency, run_id, str(night_dir / run_id), ok,
                                       error, tail, waited))
            position += 1
    return outcomes


@contextlib.contextmanager
def _children(commands: list[list[str]]):
    """Lane processes; on any way out, terminate -> kill, so none outlives `bench`."""
    procs = [subprocess.Popen(cmd, start_new_session=True) for cmd in commands]
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 15)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
                proc.wait()


def run_lanes(config: NightConfig, night_id: str, progress, outcomes: list[RunOutcome]) -> list[RunOutcome]:
    if len(config.gpus) <= 1:
        return run_lane(config, night_id, 0, progress, outcomes)
    night_dir = config.results_dir / night_id
    night_dir.mkdir(parents=True, exist_ok=True)
    commands = [[sys.executable, "-m", "harness.nightly", str(config.source), "--lane", str(k), "--night-id",
                 night_id, "--out", str(night_dir / f"lane-{k}.json")] for k in range(len(config.gpus))]
    procs: list[subprocess.Popen] = []
    try:
        with _children(commands) as procs:
            for proc in procs:
                proc.wait()
    finally:  # also when interrupted: each lane wrote what it finished
        for k, proc in enumerate(procs):
            path = night_dir / f"lane-{k}.json"
            if path.exists():
                outcomes += [RunOutcome(**o) for o in json.loads(path.read_text())]
            elif proc.returncode not in (None, 130):
                outcomes.append(RunOutcome(config.gpus[k], 0, "lane", 0, f"lane-{k}", str(night_dir), False,
                                           f"lane {k} (GPU {config.gpus[k]}) exited {proc.returncode} without results"))
    return outcomes


# -- the night ---------------------------------------------------------------------------------------------------

@dataclass
class NightResult:
    night_id: str
    night_dir: Path
    outcomes: list[RunOutcome]
    rows: list[RunRow]
    gates: list[dict]
    comparison: list[dict]
    card_spread: list[dict]
    alarms: list  # history.Alarm
    against_history: list[dict] = field(default_factory=list)
    report: tuple[Path, Path] | None = None

    @property
    def exit_code(self) -> int:
        code = 0
        if any(g["verdict"] == "FAIL" for g in self.gates):
            code |= EXIT_GATE_FAILED
        if any(not o.ok for o in self.outcomes):
            code |= EXIT_RUN_FAILED
        if any(a.change.worse for a in self.alarms):
            code |= EXIT_REGRESSION
        return code


def _git_describe() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(PROJECT_ROOT), "describe", "--always", "--dirty"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def _rows(outcomes: list[RunOutcome], night_id: str) -> list[RunRow]:
    git = _git_describe()
    rows = []
    for o in outcomes:
        try:
            row = row_from_run(load_run(Path(o.run_dir)), night_id=night_id, lane=o.lane, harness_git=git,
                               error=o.error)
            # The night knows the variant even when the run died before its manifest named it.
            status = "failed" if not o.ok and row.status == "complete" else row.status
            row = replace(row, variant=o.label, status=status)
            rows.append(row)
        except HarnessError:
            rows.append(failed_row(o.run_id, Path(o.run_dir), o.label, night_id, o.lane, o.error or "no results"))
    return rows


def _gates(config: NightConfig, outcomes: list[RunOutcome]) -> list[dict]:
    """Each candidate vs the baseline, per lane and concurrency, over the pooled repeats."""
    def pooled(label, lane, conc):
        frames = [load_run(Path(o.run_dir)).requests for o in outcomes
                  if o.ok and o.label == label and o.lane == lane and o.concurrency == conc]
        return pd.concat(frames, ignore_index=True) if frames else None

    results = []
    for lane in sorted({o.lane for o in outcomes}):
        for conc in config.concurrency:
            base = pooled(config.baseline.label, lane, conc)
            for cand in config.candidates:
                entry = {"lane": lane, "concurrency": conc, "candidate": cand.label, "baseline": config.baseline.label}
                other = pooled(cand.label, lane, conc)
                if base is None or other is None or "score" not in base or "score" not in other:
                    results.append({**entry, "verdict": "NOT RUN", "note": "a run failed"})
                    continue
                pairs = paired_items(base, other)
                if pairs.empty:
                    results.append({**entry, "verdict": "NOT RUN", "note": "no scored item in common"})
                    continue
                g = gate(pairs, threshold=config.gate_threshold, confidence=config.gate_confidence, seed=config.seed)
                o = g.overall
                results.append({**entry, "verdict": g.verdict, "ratio": o.ratio, "low": o.low, "high": o.high,
                                "items": o.items, "note": o.note})
    return results


def _comparison(config: NightConfig, rows: list[RunRow]) -> tuple[list[dict], list[dict]]:
    """J/request and quality of every variant vs the baseline within each GPU; card-to-card spread."""
    def mean_of(label, lane, conc, column):
        values = [getattr(r, column) for r in rows if r.variant == label and r.lane == lane
                  and r.concurrency == conc and r.status == "complete" and getattr(r, column) is not None]
        return float(np.mean(values)) if values else None

    table, spread = [], []
    lanes = sorted({r.lane for r in rows})
    for conc in config.concurrency:
        for lane in lanes:
            base = mean_of(config.baseline.label, lane, conc, "j_per_request")
            for v in config.variants:
                j = mean_of(v.label, lane, conc, "j_per_request")
                table.append({"lane": lane, "concurrency": conc, "variant": v.label, "j_per_request": j,
                              "vs_baseline": (j / base - 1) if j is not None and base else None,
                              "quality": mean_of(v.label, lane, conc, "quality"),
                              "e2e_p50_s": mean_of(v.label, lane, conc, "e2e_p50_s")})
        if len(lanes) > 1:
            for v in config.variants:
                values = [x for x in (mean_of(v.label, lane, conc, "j_per_request") for lane in lanes) if x is not None]
                if len(values) > 1:
                    spread.append({"variant": v.label, "concurrency": conc, "lanes": len(values),
                                   "min": min(values), "max": max(values),
                                   "spread_rel": (max(values) - min(values)) / float(np.mean(values))})
    return table, spread


def run_night(config: NightConfig, progress, night_id: str | None = None) -> NightResult:
    """The whole night: runs, history, then the verdicts and the report (`conclude`)."""
    night_id = night_id or datetime.now(UTC).strftime("%Y-%m-%d")
    night_dir = config.results_dir / night_id
    if (night_dir / "night.json").exists() or any(night_dir.glob(f"{night_id}-*/manifest.json")):
        raise ConfigError(f"night '{night_id}' already ran in {night_dir}; pass another --night-id")
    with History(config.history_url) as history:  # opened first: a bad URL fails before hours of runs
        outcomes: list[RunOutcome] = []
        try:
            run_lanes(config, night_id, progress, outcomes)
        except KeyboardInterrupt:
            history.add(_rows(outcomes, night_id))  # what finished before the interrupt is kept
            raise
        history.add(_rows(outcomes, night_id))
    return conclude(config, night_id, outcomes)


def conclude(config: NightConfig, night_id: str, outcomes: list[RunOutcome] | None = None) -> NightResult:
    """Gates, comparison, changes and the report of a night whose runs are on disk and in the history.
    Without `outcomes`, they are read back from the night's night.json (`bench nightly --report-only`)."""
    night_dir = config.results_dir / night_id
    if outcomes is None:
        try:
            outcomes = [RunOutcome(**o) for o in json.loads((night_dir / "night.json").read_text())["outcomes"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{night_dir / 'night.json'}: cannot read the night's runs ({exc})") from None
    with History(config.history_url, create=False) as history:
        everything = history.rows()
    tonight = {str(Path(o.run_dir).resolve()) for o in outcomes}
    rows = [r for r in everything if r.run_dir in tonight]
    gates = _gates(config, outcomes)
    comparison, spread = _comparison(config, rows)
    alarms = judge(everything, config.metrics, config.detector, night_id=night_id)
    result = NightResult(night_id, night_dir, outcomes, rows, gates, comparison, spread, alarms,
                         against_history(everything, config.metrics, night_id, config.detector))
    night_dir.mkdir(parents=True, exist_ok=True)
    (night_dir / "night.json").write_text(json.dumps({
        "night_id": night_id, "config": str(config.source), "exit_code": result.exit_code,
        "outcomes": [asdict(o) for o in outcomes], "gates": gates, "comparison": comparison,
        "card_spread": spread, "alarms": [a.describe() for a in alarms],
        "against_history": result.against_history}, indent=2, default=str) + "\n")
    result.report = write_night_report(config, result, everything)
    return result


# -- the commands (each returns the lines `bench` prints, and its exit code) -----------------------------------

def night_command(config_path: Path, night_id: str | None = None, report_only: bool = False) -> tuple[list[str], int]:
    """`bench nightly`: the night (or, with `report_only`, its verdicts and report again)."""
    config = load_night_config(config_path)
    if report_only and not night_id:
        raise ConfigError("--report-only needs --night-id")
    result = conclude(config, night_id) if report_only else run_night(config, for_terminal(), night_id=night_id)
    return [*(alarm.describe() for alarm in result.alarms),
            f"night {result.night_id}: {sum(o.ok for o in result.outcomes)}/{len(result.outcomes)} runs ok; "
            f"report {result.report[1]}; exit {result.exit_code}"], result.exit_code


def history_location(db: str | None) -> str:
    """The history database `bench history` uses: --db, else $BENCH_HISTORY, else results/history.sqlite."""
    return db or os.environ.get("BENCH_HISTORY") or "results/history.sqlite"


def history_command(db: str, *, variant: str | None = None, metric: str = "j_per_request", since: str | None = None,
                    html_out: Path | None = None, check: bool = False) -> tuple[list[str], int]:
    """`bench history`: the trend table and the alarms; exit 4 with `check` when a regression is flagged."""
    if metric not in METRICS:
        raise ConfigError(f"--metric: known metrics are {', '.join(METRICS)}")
    with History(db, create=False) as history:
        rows = history.rows(variant=variant, since=since)
    alarms = judge(rows, [metric])
    lines = [*trend_lines(rows, metric), *(alarm.describe() for alarm in alarms)]
    if html_out is not None:
        md, page = history_page(rows, [metric], alarms, html_out)
        lines.append(f"wrote {md} and {page}")
    return lines, EXIT_REGRESSION if check and any(a.change.worse for a in alarms) else 0


def history_import_command(db: str, run_dirs: list[Path], night_id: str | None = None) -> list[str]:
    """`bench history import`: add run folders to the history (a run already there is replaced)."""
    rows = [row_from_run(load_run(d), night_id=night_id) for d in run_dirs]
    with History(db) as history:
        history.add(rows)
    return [f"imported {len(rows)} run(s) into {db}"]


def main(argv: list[str] | None = None) -> int:
    """A lane's child process: run the lane, write its outcomes as JSON."""
    parser = argparse.ArgumentParser(prog="python -m harness.nightly")
    parser.add_argument("config", type=Path)
    parser.add_argument("--lane", type=int, required=True)
    parser.add_argument("--night-id", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    outcomes: list[RunOutcome] = []
    try:
        run_lane(load_night_config(args.config), args.night_id, args.lane, outcomes=outcomes)
        code = 0
    except HarnessError as exc:  # the parent records the lane as failed, with this line on stderr
        print(f"bench nightly lane {args.lane}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        code = 130
    args.out.write_text(json.dumps([asdict(o) for o in outcomes], indent=2) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
