"""The history database: one row per run, across nights. Adapter over SQLAlchemy (Core).

Default: an embedded SQLite file (`results/history.sqlite`); any SQLAlchemy URL (e.g.
`postgresql+psycopg://host/db`) when a team shares one. The schema is created and migrated by
the tool itself: a `schema_info` table holds the version, and `MIGRATIONS` brings an older
database forward step by step inside one transaction. SQLite runs in WAL mode, so a reader
(`bench history`, a dashboard) never locks the nightly writer out, with a busy timeout for
two writers. Every SQLAlchemy error is translated once, here, into HistoryError.

What a row says about a run is read from the stored run in one place (`row_from_run`), so the
rest of the harness's model of a run can change without touching the database."""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from statistics import NormalDist

import numpy as np

from harness.energy.analysis import headline_selection
from harness.errors import HistoryError
from harness.regression import ChangePoint, DetectorSettings, NightPoint, detect, noise_sigma
from harness.store import RunData

SCHEMA_VERSION = 1
DEFAULT_URL = "sqlite:///results/history.sqlite"
CONFIDENCE = 0.95


@dataclass(frozen=True)
class RunRow:
    """One run in the history. Energy in joules, times in seconds, quality in [0, 1]."""

    run_id: str
    run_dir: str  # path or URL of the run folder
    night_id: str  # the night it belongs to (YYYY-MM-DD, or the nightly's id)
    lane: str  # GPU lane of a multi-GPU night ("0", "1", ...); "" for a single lane
    created_wall_s: float
    status: str  # complete / incomplete / failed
    variant: str
    harness_version: str | None
    harness_git: str | None
    vllm_version: str | None
    model: str | None
    model_hash: str | None
    gpu_uuid: str | None
    gpu_name: str | None
    driver_version: str | None
    suite_name: str | None
    suite_hash: str | None
    sampling: str  # JSON of the sampling sent
    concurrency: int | None
    samples: int | None
    requests: int | None
    ok: int | None
    j_per_request: float | None
    j_per_request_low: float | None
    j_per_request_high: float | None
    j_per_request_se: float | None  # standard error of the mean from the per-request spread
    above_idle_j_per_request: float | None
    above_idle_j_per_request_low: float | None
    above_idle_j_per_request_high: float | None
    j_per_correct_answer: float | None
    quality: float | None
    quality_low: float | None
    quality_high: float | None
    quality_se: float | None
    e2e_p50_s: float | None
    e2e_p90_s: float | None
    e2e_p99_s: float | None
    ttft_p50_s: float | None
    ttft_p90_s: float | None
    output_tokens_per_s: float | None
    requests_per_s: float | None
    flags: str  # JSON list of validity flags
    error: str | None  # why a run failed (first line)

    @property
    def flag_list(self) -> list[str]:
        return json.loads(self.flags or "[]")

    @property
    def comparable_key(self) -> tuple:
        """Runs of one series: same variant, GPU (its UUID, else the lane), suite, sampling and concurrency."""
        return (self.variant, self.gpu_uuid or (f"lane {self.lane}" if self.lane else None), self.suite_hash,
                self.sampling, self.concurrency)


# Metrics a trend or an alarm can follow: column, standard-error column, higher is worse?
METRICS = {
    "j_per_request": ("j_per_request", "j_per_request_se", True),
    "above_idle_j_per_request": ("above_idle_j_per_request", None, True),
    "j_per_correct_answer": ("j_per_correct_answer", None, True),
    "quality": ("quality", "quality_se", False),
    "e2e_p50_s": ("e2e_p50_s", None, True),
    "ttft_p50_s": ("ttft_p50_s", None, True),
    "output_tokens_per_s": ("output_tokens_per_s", None, False),
}


def mean_interval(values, confidence: float = CONFIDENCE) -> tuple[float | None, float | None, float | None]:
    """(low, high, standard error) of a mean, normal approximation; None below two values."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(x) < 2:
        return None, None, None
    se = float(x.std(ddof=1) / math.sqrt(len(x)))
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    mean = float(x.mean())
    return mean - z * se, mean + z * se, se


def model_fingerprint(model: str | None) -> str | None:
    """A short hash of a local model folder's config and file sizes (cheap, not a weight checksum);
    None for hub ids and missing folders."""
    if not model:
        return None
    folder = Path(model).expanduser()
    if not folder.is_dir():
        return None
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.is_file():
            digest.update(f"{path.name}:{path.stat().st_size}\n".encode())
            if path.suffix == ".json" and path.stat().st_size < 1_000_000:
                digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def row_from_run(run: RunData, *, night_id: str | None = None, lane: str = "", harness_git: str | None = None,
                 error: str | None = None) -> RunRow:
    """The history row of a stored run (the one place that reads the run's stored model)."""
    m, s = run.manifest, run.summary
    energy = s.energy if s is not None else None
    quality = s.quality if s is not None else None
    latency = s.latency if s is not None else None
    variant = m.variant
    gpus = m.meter.gpus if m.meter else ()
    requests = run.requests
    final = ~requests["retried"].astype(bool) if "retried" in requests else True
    ok = requests[(requests["status"] == "ok") & final] if len(requests) else requests
    energy_ok = bool(energy and energy.available) and "energy_j" in ok
    # The intervals cover the same requests as the stored summary's J/request (its `headline_requests`).
    headline = ok
    if energy_ok and energy.headline_requests != "all":
        headline = headline_selection(ok, first_pass_only=energy.headline_requests == "first pass")[0]
    j_low, j_high, j_se = mean_interval(headline["energy_j"]) if energy_ok else (None, None, None)
    a_low, a_high, _ = (mean_interval(headline["energy_above_idle_j"])
                        if energy_ok and "energy_above_idle_j" in headline else (None, None, None))
    q_low = q_high = q_se = None
    if quality is not None and quality.overall is not None and "score" in requests:
        items = requests[requests["score"].notna()].groupby("item_id")["score"].mean()
        q_low, q_high, q_se = mean_interval(items)
    created = float(m.created_wall_s or time.time())
    model = variant.model if variant else None
    return RunRow(
        run_id=run.run_id, run_dir=str(run.dir.resolve()),
        night_id=night_id or datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%d"), lane=lane,
        created_wall_s=created, status=str(m.status.value), variant=variant.name if variant else "?",
        harness_version=m.harness_version, harness_git=harness_git,
        vllm_version=m.server.vllm_version if m.server else None, model=model, model_hash=model_fingerprint(model),
        gpu_uuid=",".join(g.uuid for g in gpus) or None, gpu_name=",".join(sorted({g.name for g in gpus})) or None,
        driver_version=m.meter.driver_version if m.meter else None, suite_name=m.suite.name, suite_hash=m.suite.hash,
        sampling=json.dumps(m.sampling_sent or {}, sort_keys=True),
        concurrency=m.concurrency, samples=m.samples,
        requests=latency.requests if latency else None, ok=latency.ok if latency else None,
        j_per_request=energy.j_per_request_mean if energy else None, j_per_request_low=j_low,
        j_per_request_high=j_high, j_per_request_se=j_se,
        above_idle_j_per_request=energy.above_idle_j_per_request_mean if energy else None,
        above_idle_j_per_request_low=a_low, above_idle_j_per_request_high=a_high,
        j_per_correct_answer=energy.j_per_correct_answer if energy else None,
        quality=quality.overall if quality else None, quality_low=q_low, quality_high=q_high, quality_se=q_se,
        e2e_p50_s=latency.e2e_s.p50 if latency else None, e2e_p90_s=latency.e2e_s.p90 if latency else None,
        e2e_p99_s=latency.e2e_s.p99 if latency else None, ttft_p50_s=latency.ttft_s.p50 if latency else None,
        ttft_p90_s=latency.ttft_s.p90 if latency else None,
        output_tokens_per_s=latency.output_tokens_per_s if latency else None,
        requests_per_s=latency.requests_per_s if latency else None,
        flags=json.dumps(list(s.flags) if s is not None else []), error=error or m.incomplete_cause,
    )


def failed_row(run_id: str, run_dir: Path, variant: str, night_id: str, lane: str, error: str) -> RunRow:
    """A run that left no readable results (its server never started, say)."""
    empty = {f.name: None for f in fields(RunRow)}
    return RunRow(**{**empty, "run_id": run_id, "run_dir": str(Path(run_dir).resolve()), "night_id": night_id,
                     "lane": lane, "created_wall_s": time.time(), "status": "failed", "variant": variant,
                     "sampling": "{}", "flags": "[]", "error": error.splitlines()[0] if error else "failed"})


def _url(url_or_path: str) -> str:
    return url_or_path if "://" in url_or_path else f"sqlite:///{Path(url_or_path).expanduser()}"


def _tables(metadata):
    from sqlalchemy import Column, Float, Integer, String, Table, Text

    kinds = {"float | None": Float, "float": Float, "int | None": Integer, "str": String(512),
             "str | None": String(512)}
    text_columns = {"sampling", "flags", "error"}
    columns = [Column(f.name, Text if f.name in text_columns else kinds[f.type], nullable=f.name not in
                      ("run_id", "run_dir", "night_id", "variant")) for f in fields(RunRow)]
    runs = Table("runs", metadata, Column("id", Integer, primary_key=True, autoincrement=True), *columns)
    info = Table("schema_info", metadata, Column("version", Integer, nullable=False))
    return runs, info


def _create_v1(conn, runs, info) -> None:
    from sqlalchemy import Index

    runs.create(conn)
    Index("runs_by_dir", runs.c.run_dir, unique=True).create(conn)
    Index("runs_by_variant_night", runs.c.variant, runs.c.night_id).create(conn)


# version -> step that brings a database at version-1 to version (v1 creates the tables).
MIGRATIONS = {1: _create_v1}


class History:
    """Open (creating or migrating) a history database; add rows; read them back."""

    def __init__(self, url_or_path: str = DEFAULT_URL, create: bool = True):
        from sqlalchemy import MetaData, create_engine, event
        from sqlalchemy.exc import SQLAlchemyError

        self.url = _url(url_or_path)
        try:
            if self.url.startswith("sqlite:///"):
                path = Path(self.url.removeprefix("sqlite:///"))
                if not create and not path.exists():  # a reader must not leave an empty database behind
                    raise HistoryError(f"no history database at {path} (`bench nightly` or `bench history import` "
                                       f"creates it)")
                path.parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_engine(self.url)
            if self.engine.dialect.name == "sqlite":
                @event.listens_for(self.engine, "connect")
                def _sqlite_pragmas(dbapi_conn, _record):  # WAL: readers never block the writer
                    cursor = dbapi_conn.cursor()
                    cursor.execute("PRAGMA journal_mode=WAL")
                    cursor.execute("PRAGMA busy_timeout=30000")
                    cursor.close()
            self.metadata = MetaData()
            self.runs, self.info = _tables(self.metadata)
            self._migrate()
        except (SQLAlchemyError, OSError) as exc:
            raise HistoryError(f"history database {self.url}: {_first_line(exc)}") from None

    def _migrate(self) -> None:
        from sqlalchemy import inspect, select

        with self.engine.begin() as conn:
            if not inspect(conn).has_table("schema_info"):
                self.info.create(conn)
                conn.execute(self.info.insert().values(version=0))
            version = conn.execute(select(self.info.c.version)).scalar_one()
            if version > SCHEMA_VERSION:
                raise HistoryError(f"history database {self.url} has schema {version}; this harness knows up to "
                                   f"{SCHEMA_VERSION} (upgrade energy-harness)")
            for step in range(version + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[step](conn, self.runs, self.info)
                conn.execute(self.info.update().values(version=step))

    def schema_version(self) -> int:
        from sqlalchemy import select

        with self.engine.connect() as conn:
            return conn.execute(select(self.info.c.version)).scalar_one()

    def add(self, rows: Iterable[RunRow]) -> int:
        """Insert rows; a run already present (same folder) is replaced. One transaction."""
        from sqlalchemy.exc import SQLAlchemyError

        rows = list(rows)
        try:
            with self.engine.begin() as conn:
                for row in rows:
                    conn.execute(self.runs.delete().where(self.runs.c.run_dir == row.run_dir))
                    conn.execute(self.runs.insert().values(**asdict(row)))
        except SQLAlchemyError as exc:
            raise HistoryError(f"history database {self.url}: cannot add runs ({_first_line(exc)})") from None
        return len(rows)

    def rows(self, variant: str | None = None, since: str | None = None) -> list[RunRow]:
        """Rows oldest first, optionally of one variant and from night `since` (YYYY-MM-DD) on."""
        from sqlalchemy import select
        from sqlalchemy.exc import SQLAlchemyError

        query = select(*[self.runs.c[f.name] for f in fields(RunRow)])
        if variant:
            query = query.where(self.runs.c.variant == variant)
        if since:
            query = query.where(self.runs.c.night_id >= since)
        query = query.order_by(self.runs.c.night_id, self.runs.c.created_wall_s)
        try:
            with self.engine.connect() as conn:
                return [RunRow(**dict(r._mapping)) for r in conn.execute(query)]
        except SQLAlchemyError as exc:
            raise HistoryError(f"history database {self.url}: cannot read ({_first_line(exc)})") from None

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _first_line(exc: Exception) -> str:
    return (str(getattr(exc, "orig", None) or exc).strip().splitlines() or ["unknown error"])[0]


# -- series and alarms over the rows (pure) ----------------------------------------------------------------------

def series_label(key: tuple) -> str:
    variant, gpu, _suite, _sampling, concurrency = key
    first_gpu = gpu.split(",")[0][:12] if gpu else None  # a GPU UUID prefix, or "lane K"
    return f"{variant} c{concurrency}" + (f" {first_gpu}" if first_gpu else "")


def series(rows: Iterable[RunRow], metric: str) -> dict[str, list[NightPoint]]:
    """Per comparable series (variant, GPU, suite, sampling, concurrency), one point per night: the
    mean over the night's complete runs, with its standard error (from the per-request spread,
    divided by sqrt(repeats)), the runs behind it, and whether any had validity flags."""
    column, se_column, _ = METRICS[metric]
    groups: dict[str, dict[str, list[RunRow]]] = {}
    for row in rows:
        if row.status != "complete" or getattr(row, column) is None:
            continue
        label = series_label(row.comparable_key)
        groups.setdefault(label, {}).setdefault(row.night_id, []).append(row)
    out = {}
    for label, nights in groups.items():
        points = []
        for night_id in sorted(nights):
            night = nights[night_id]
            values = [getattr(r, column) for r in night]
            ses = [getattr(r, se_column) for r in night] if se_column else []
            se = (math.sqrt(sum(s * s for s in ses) / len(ses)) / math.sqrt(len(ses))
                  if ses and all(s is not None for s in ses) else None)
            points.append(NightPoint(night_id=night_id, value=float(np.mean(values)), se=se,
                                     runs=tuple(r.run_dir for r in night), flagged=any(r.flag_list for r in night)))
        out[label] = points
    return out


@dataclass(frozen=True)
class Alarm:
    series: str
    metric: str
    change: ChangePoint

    def describe(self) -> str:
        return self.change.describe(f"{self.series} {self.metric}")


def judge(rows: list[RunRow], metrics: Iterable[str], settings: DetectorSettings = DetectorSettings(),
          night_id: str | None = None) -> list[Alarm]:
    """Changes in every series as of `night_id` (default: the newest night of each series)."""
    alarms = []
    for metric in metrics:
        higher_is_worse = METRICS[metric][2]
        for label, points in series(rows, metric).items():
            if night_id is not None:
                points = [p for p in points if p.night_id <= night_id]
                if not points or points[-1].night_id != night_id:
                    continue  # this series did not run that night
            found = detect(points, settings, higher_is_worse=higher_is_worse)
            if found is not None:
                alarms.append(Alarm(label, metric, found))
    return alarms


def against_history(rows: list[RunRow], metrics: Iterable[str], night_id: str,
                    settings: DetectorSettings = DetectorSettings()) -> list[dict]:
    """Tonight's value of every series against the median of its previous nights (in the window),
    with the noise it is judged against -- the numbers behind "no change" as well as an alarm."""
    out = []
    for metric in metrics:
        for label, points in series(rows, metric).items():
            if not points or points[-1].night_id != night_id:
                continue
            previous = points[:-1][-settings.window_nights:]
            entry = {"series": label, "metric": metric, "tonight": points[-1].value, "nights_before": len(previous),
                     "median_before": None, "change_rel": None, "noise_rel": None}
            if previous:
                median = float(np.median([p.value for p in previous]))
                window = [*previous, points[-1]]
                sigma = noise_sigma([p.value for p in window], [p.se for p in window])
                known = len(window) >= 3 or any(p.se is not None for p in window)  # else: no noise seen yet
                if median:
                    entry.update(median_before=median, change_rel=points[-1].value / median - 1,
                                 noise_rel=sigma / abs(median) if known else None)
            out.append(entry)
    return out
