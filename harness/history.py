"""The history database: one row per run, across nights. Adapter over SQLAlchemy (Core).

Default: an embedded SQLite file (`results/history.sqlite`); any SQLAlchemy URL when a team
shares one (PostgreSQL through psycopg 3, the `postgres` extra: `postgresql://user@host/db` means
`postgresql+psycopg://`). The schema is created and migrated by the tool itself: a `schema_info`
table holds the version; a new database is created at the current version, an older one is brought
forward step by step (`MIGRATIONS`) inside one transaction that holds a lock (PostgreSQL: an advisory
lock; SQLite: the write lock), so two nightlies opening a new or old database at once create or migrate
it once. SQLite runs in WAL mode, so a reader (`bench history`, a dashboard) never locks the nightly
writer out, with a busy timeout for two writers; PostgreSQL readers never block writers anyway (MVCC).
A run is identified by its host and its folder's path on that host. Every database error is
translated once, here, into HistoryError; a password in the URL never appears in a message.

What a row says about a run is read from the stored run in one place (`row_from_run`), so the
rest of the harness's model of a run can change without touching the database."""

from __future__ import annotations

import hashlib
import json
import math
import socket
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from statistics import NormalDist

import numpy as np

from harness.credentials import redact_url
from harness.energy.analysis import headline_selection
from harness.errors import HistoryError
from harness.regression import ChangePoint, DetectorSettings, NightPoint, detect, noise_sigma
from harness.store import RunData

SCHEMA_VERSION = 2
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
    host: str = ""  # the machine whose `run_dir` this is: with a shared history, one path on two hosts is two runs

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


def this_host() -> str:
    return socket.gethostname()


def row_from_run(run: RunData, *, night_id: str | None = None, lane: str = "", harness_git: str | None = None,
                 error: str | None = None, host: str | None = None) -> RunRow:
    """The history row of a stored run (the one place that reads the run's stored model); `host`: the
    machine holding the run folder [default: this one]."""
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
        host=host or this_host(),
    )


def failed_row(run_id: str, run_dir: Path, variant: str, night_id: str, lane: str, error: str) -> RunRow:
    """A run that left no readable results (its server never started, say)."""
    empty = {f.name: None for f in fields(RunRow)}
    return RunRow(**{**empty, "run_id": run_id, "run_dir": str(Path(run_dir).resolve()), "night_id": night_id,
                     "lane": lane, "created_wall_s": time.time(), "status": "failed", "variant": variant,
                     "sampling": "{}", "flags": "[]", "error": error.splitlines()[0] if error else "failed",
                     "host": this_host()})


def _url(url_or_path: str) -> str:
    """A SQLAlchemy URL: a bare path is a SQLite file; PostgreSQL without a driver means psycopg 3
    (SQLAlchemy's own default, psycopg2, is not what the `postgres` extra installs)."""
    if "://" not in url_or_path:
        return f"sqlite:///{Path(url_or_path).expanduser()}"
    for bare in ("postgresql://", "postgres://"):
        if url_or_path.startswith(bare):
            return "postgresql+psycopg://" + url_or_path.removeprefix(bare)
    return url_or_path


def _tables(metadata):
    from sqlalchemy import Column, Float, Index, Integer, Table, Text

    kinds = {"float | None": Float, "float": Float, "int | None": Integer, "str": Text, "str | None": Text}
    required = ("run_id", "run_dir", "night_id", "variant", "host")
    columns = [Column(f.name, kinds[f.type], nullable=f.name not in required,
                      server_default="" if f.name == "host" else None) for f in fields(RunRow)]
    runs = Table("runs", metadata, Column("id", Integer, primary_key=True, autoincrement=True), *columns,
                 Index("runs_by_host_dir", "host", "run_dir", unique=True),
                 Index("runs_by_variant_night", "variant", "night_id"))
    info = Table("schema_info", metadata, Column("version", Integer, nullable=False))
    return runs, info


def _v2_text_and_host(conn, runs) -> None:
    """v1 declared strings VARCHAR(512): PostgreSQL enforces the length (a run folder's path or URL can be
    longer), SQLite never did (its VARCHAR is TEXT). v1 identified a run by its folder's path alone: in a
    history shared by several machines, the same path on two hosts replaced each other's rows; v2 adds the
    host ('' for the rows v1 wrote) and identifies a run by (host, path)."""
    from sqlalchemy import String, inspect, text

    if conn.dialect.name != "sqlite":
        for column in inspect(conn).get_columns("runs"):
            if isinstance(column["type"], String) and getattr(column["type"], "length", None):
                conn.execute(text(f"ALTER TABLE runs ALTER COLUMN {column['name']} TYPE TEXT"))
    conn.execute(text("ALTER TABLE runs ADD COLUMN host TEXT NOT NULL DEFAULT ''"))
    conn.execute(text("DROP INDEX runs_by_dir"))
    conn.execute(text("CREATE UNIQUE INDEX runs_by_host_dir ON runs (host, run_dir)"))


# version -> step that brings a database at version-1 to version. A new database is created at
# SCHEMA_VERSION directly (`_tables`); v1 (2026-11) is tests/fixtures/history-v1.sqlite.
MIGRATIONS = {2: _v2_text_and_host}
SQLITE_BUSY_S = 30.0  # SQLite: longest wait for another connection's lock (a second writer, a WAL switch)


def _sqlite_wal(dbapi_conn, wait_s: float = SQLITE_BUSY_S) -> None:
    """Every SQLite connection: a busy timeout, and WAL mode (readers never block the writer).

    WAL is a property of the file, switched once by whichever opener comes first; the switch needs
    the file to itself, and SQLite answers "database is locked" at once instead of calling the busy
    handler while another connection of a new database holds a lock (four openers at once failed
    6 times in 40). So the switch waits here, as the busy timeout waits everywhere else."""
    import sqlite3

    cursor = dbapi_conn.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={int(wait_s * 1000)}")
        deadline = time.monotonic() + wait_s
        while True:
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
    finally:
        cursor.close()


MIGRATION_LOCK = 0x6265_6E63_6868  # PostgreSQL advisory lock key of the schema ("benchh")
MIGRATION_WAIT_S = 60.0  # PostgreSQL: longest wait for the locks a creation or migration needs


class History:
    """Open (creating or migrating) a history database; add rows; read them back.
    `create=False` (readers): a database without a history is an error, and nothing is created."""

    def __init__(self, url_or_path: str = DEFAULT_URL, create: bool = True):
        from sqlalchemy.exc import SQLAlchemyError

        self.url = _url(url_or_path)
        self.shown = redact_url(self.url)  # what messages say
        self.engine = None
        try:
            self._open(create)
        except ImportError as exc:  # the URL's driver is not installed
            self.close()
            raise HistoryError(f"history database {self.shown}: driver {exc.name or exc} is not installed"
                               f"{' (pip install energy-harness[postgres])' if exc.name == 'psycopg' else ''}"
                               ) from None
        except (SQLAlchemyError, OSError) as exc:
            self.close()
            raise HistoryError(f"history database {self.shown}: {_first_line(exc)}") from None
        except BaseException:
            self.close()
            raise

    def _open(self, create: bool) -> None:
        from sqlalchemy import MetaData, create_engine, event

        if self.url.startswith("sqlite:///"):
            path = Path(self.url.removeprefix("sqlite:///"))
            if not create and not path.exists():  # a reader must not leave an empty database behind
                raise HistoryError(f"no history database at {path} (`bench nightly` or `bench history import` "
                                   f"creates it)")
            path.parent.mkdir(parents=True, exist_ok=True)
        # pre-ping: a nightly holds the engine for hours, and a database server drops idle connections
        self.engine = create_engine(self.url, pool_pre_ping=not self.url.startswith("sqlite"))
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", lambda dbapi_conn, _record: _sqlite_wal(dbapi_conn))
        self.metadata = MetaData()
        self.runs, self.info = _tables(self.metadata)
        self._migrate(create)

    def _version(self, conn) -> int | None:
        from sqlalchemy import inspect, select

        if not inspect(conn).has_table("schema_info"):
            return None
        return conn.execute(select(self.info.c.version)).scalar_one()

    def _migrate(self, create: bool) -> None:
        from sqlalchemy import text

        with self.engine.connect() as conn:  # the usual case: up to date, and a reader takes no lock
            version = self._version(conn)
        if version == SCHEMA_VERSION:
            return
        with self.engine.begin() as conn:
            # One opener at a time creates or migrates the schema; the others wait, then find it done.
            if conn.dialect.name == "postgresql":  # released at commit
                # A migration waits for readers' transactions on `runs`; a forgotten one fails it, it never hangs.
                conn.execute(text(f"SET LOCAL lock_timeout = '{int(MIGRATION_WAIT_S * 1000)}ms'"))
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            elif conn.dialect.name == "sqlite":  # the write lock before the first read (busy_timeout waits for it)
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            version = self._version(conn)
            if version is None:
                if not create:
                    raise HistoryError(f"no history in {self.shown} (`bench nightly` or `bench history import` "
                                       f"creates it)")
                self.metadata.create_all(conn)
                conn.execute(self.info.insert().values(version=SCHEMA_VERSION))
                return
            if version > SCHEMA_VERSION:
                raise HistoryError(f"history database {self.shown} has schema {version}; this harness knows up to "
                                   f"{SCHEMA_VERSION} (upgrade energy-harness)")
            for step in range(version + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[step](conn, self.runs)
                conn.execute(self.info.update().values(version=step))

    def schema_version(self) -> int:
        from sqlalchemy import select

        with self.engine.connect() as conn:
            return conn.execute(select(self.info.c.version)).scalar_one()

    def add(self, rows: Iterable[RunRow]) -> int:
        """Insert rows; a run already present (same host and folder) is replaced. One transaction."""
        from sqlalchemy.exc import SQLAlchemyError

        rows = list(rows)
        try:
            with self.engine.begin() as conn:
                for row in rows:
                    # '' : a row from before hosts were recorded (schema 1), taken to be this folder's
                    conn.execute(self.runs.delete().where(self.runs.c.host.in_((row.host, ""))
                                                          & (self.runs.c.run_dir == row.run_dir)))
                    conn.execute(self.runs.insert().values(**asdict(row)))
        except SQLAlchemyError as exc:
            raise HistoryError(f"history database {self.shown}: cannot add runs ({_first_line(exc)})") from None
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
            raise HistoryError(f"history database {self.shown}: cannot read ({_first_line(exc)})") from None

    def close(self) -> None:
        if self.engine is not None:
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
