"""The results folder of one run, on disk. Every file a run writes goes through here.

Layout of `results/<run-id>/`:
  manifest.json       what was run: variant, server command, sampling, suite + hash, versions,
                      hardware, meter, segments; status (running / complete / incomplete / failed)
  requests.jsonl      journal: one line per finished request, appended and fsynced as it arrives
  power.csv           journal: power samples appended as the run goes
  requests.parquet    consolidated request table (+ energy and score columns)
  power.parquet       consolidated power trace
  items.parquet       per item: mean and spread of score and energy over its samples
  summary.json        counts, latency percentiles, energy block, quality block, validity flags
  server.log          the server's own output (launched servers)

Journals are the source of truth; the parquet files and summary are rebuilt from them (and can
be again: `bench reanalyze`, `bench score`; readers rebuild in memory when a table is missing or
truncated). The files' contents are the typed objects of `results.py`; only this module does
file I/O on a run folder."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import orjson
import pandas as pd

from harness.errors import ResultsError
from harness.records import SCHEMA_VERSION, PowerSample, RequestRecord
from harness.results import CompetitionResult, Manifest, Summary, conform, jsonable, mark_retried, request_frame

POWER_FIELDS = ["t_ns", "gpu", "power_w", "energy_mj", "temperature_c", "sm_clock_mhz", "throttle_reasons"]
MIN_FREE_BYTES = 200 * 1024 * 1024
# The layout's file names (the module docstring says what each holds): one definition each.
MANIFEST_FILE, SUMMARY_FILE = "manifest.json", "summary.json"
REQUEST_JOURNAL, POWER_JOURNAL = "requests.jsonl", "power.csv"
REQUESTS_TABLE, POWER_TABLE, ITEMS_TABLE = "requests.parquet", "power.parquet", "items.parquet"
LOCK_FILE = "run.lock"
JOURNALS = (REQUEST_JOURNAL, POWER_JOURNAL)
# What a run's results are (what a submission hashes): its record, its summary, its two tables.
RESULT_FILES = (MANIFEST_FILE, SUMMARY_FILE, REQUESTS_TABLE, POWER_TABLE)


def _open_append(path: Path):
    """Every journal append goes through here (tests wrap it to inject a full disk)."""
    return open(path, "a", newline="")


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not leave half files behind
        raise


def write_json(path: Path, data) -> None:
    """Strict JSON (no NaN: null), written atomically."""
    _atomic_write(path, json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n")


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path} is not valid JSON ({exc})") from None
    except IsADirectoryError:
        raise ResultsError(f"{path} is a folder, not a file") from None


def output_dir(path: Path) -> Path:
    """A folder to write a report into: made if missing, refused if it is a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ResultsError(f"--out {path} is a file; give a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultsError(f"cannot create {path} ({exc.strerror})") from None
    return path


def repair_tail(path: Path) -> int:
    """Cut a journal back to its last complete line (a crash or a full disk can leave half a
    line, which the next append would glue itself to); returns the bytes dropped."""
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        keep, block = size, 1 << 16
        while keep > 0:
            start = max(0, keep - block)
            f.seek(start)
            chunk = f.read(keep - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            keep = start
        if keep < size:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
    return size - keep


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def check_writable(directory: Path) -> None:
    """Fail before the run, not after it: the folder must be creatable, writable, with room."""
    if directory.exists() and not directory.is_dir():
        raise ResultsError(f"results folder {directory} is a file")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-probe-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ResultsError(f"results folder {directory} is not writable ({exc.strerror})") from None
    free = shutil.disk_usage(directory).free
    if free < MIN_FREE_BYTES:
        raise ResultsError(f"results folder {directory} has only {free // 2**20} MiB free; need "
                           f"{MIN_FREE_BYTES // 2**20} MiB")


class RunStore:
    """Writer for one run folder. `open_new` refuses an existing run; `open_resume` reopens one
    (repairing torn journal tails: `repaired` says how many bytes each lost)."""

    def __init__(self, run_dir: Path):
        self.dir = run_dir
        self._lock_fd: int | None = None
        self._seq = 0
        self.repaired: dict[str, int] = {}

    @classmethod
    def open_new(cls, results_dir: Path, run_id: str) -> RunStore:
        check_writable(results_dir)
        run_dir = results_dir / run_id
        if is_run_dir(run_dir):
            raise ResultsError(f"run id '{run_id}' already exists in {results_dir}; pick another --run-id "
                               f"or continue it with --resume {run_dir}")
        run_dir.mkdir(parents=True, exist_ok=True)
        store = cls(run_dir)
        store._lock()
        return store

    @classmethod
    def open_resume(cls, run_dir: Path) -> RunStore:
        require_run_dir(run_dir)
        check_writable(run_dir)
        store = cls(run_dir)
        store._lock()
        store.repaired = {name: n for name in JOURNALS if (n := repair_tail(run_dir / name))}
        journal = run_dir / REQUEST_JOURNAL
        store._seq = journal.read_bytes().count(b"\n") if journal.exists() else 0
        return store

    def _lock(self) -> None:
        path = self.dir / LOCK_FILE
        try:
            self._lock_fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pid = path.read_text().strip() or "?"
            if pid.isdigit() and not _pid_alive(int(pid)):
                path.unlink()  # a crashed run's lock: nobody holds it any more
                return self._lock()
            raise ResultsError(f"{self.dir} is in use by another bench process (pid {pid})") from None
        os.write(self._lock_fd, str(os.getpid()).encode())

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
            (self.dir / LOCK_FILE).unlink(missing_ok=True)

    # journals -------------------------------------------------------------------------------
    def append_request(self, record: RequestRecord) -> RequestRecord:
        """Append (and fsync) one record, numbered in journal order; returns it as stored."""
        record, line = self.journal_line(record)
        self.append_request_lines([line])
        return record

    def journal_line(self, record: RequestRecord) -> tuple[RequestRecord, str]:
        """Number a record in journal order and serialize it; `append_request_lines` writes the lines
        in that order (the run loop's group commit, on a writer thread)."""
        record = replace(record, seq=self._seq)
        self._seq += 1
        # orjson first (a third of the cost, on the event loop); the line must stay ASCII JSON, so any
        # other text (and what orjson refuses: lone surrogates) takes json.dumps with ensure_ascii.
        try:
            line = orjson.dumps(record.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY)
            if line.isascii():
                return record, line.decode("ascii") + "\n"
        except TypeError:
            pass
        return record, json.dumps(jsonable(record.to_dict()), ensure_ascii=True) + "\n"

    def append_request_lines(self, lines: list[str]) -> None:
        """Append journal lines with one fsync."""
        with _open_append(self.dir / REQUEST_JOURNAL) as f:
            f.write("".join(lines))
            f.flush()
            os.fsync(f.fileno())

    def append_power(self, samples: list[PowerSample]) -> None:
        if not samples:
            return
        path = self.dir / POWER_JOURNAL
        new = not path.exists() or path.stat().st_size == 0
        with _open_append(path) as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(POWER_FIELDS)
            for s in samples:
                writer.writerow(["" if getattr(s, k) is None else getattr(s, k) for k in POWER_FIELDS])
            f.flush()
            os.fsync(f.fileno())

    def has_power(self) -> bool:
        path = self.dir / POWER_JOURNAL
        return path.exists() and path.read_bytes().count(b"\n") > 1  # more than the header

    def write_manifest(self, manifest: Manifest) -> None:
        write_json(self.dir / MANIFEST_FILE, manifest.to_json())

    def read_manifest(self) -> Manifest:
        return read_manifest(self.dir)


def is_run_dir(path: Path) -> bool:
    return (Path(path) / MANIFEST_FILE).is_file()


def require_run_dir(path: Path) -> None:
    if not is_run_dir(path):
        raise ResultsError(f"{path} is not a run folder (no {MANIFEST_FILE})")


def find_runs(root: Path) -> list[Path]:
    """Every run folder under `root` (itself included), in path order."""
    return sorted(manifest.parent for manifest in Path(root).rglob(MANIFEST_FILE))


def has_request_journal(run_dir: Path) -> bool:
    """True once a request has been journaled: the run has measured something worth keeping."""
    return (Path(run_dir) / REQUEST_JOURNAL).exists()


def read_manifest(run_dir: Path) -> Manifest:
    data = read_json(run_dir / MANIFEST_FILE)
    version = data.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ResultsError(f"{run_dir} was written with result schema {version}; this harness reads up to "
                           f"{SCHEMA_VERSION} (upgrade energy-harness)")
    try:
        return Manifest.from_json(data)
    except (TypeError, ValueError, KeyError) as exc:
        raise ResultsError(f"{run_dir}/manifest.json is malformed ({exc})") from None


def write_summary(run_dir: Path, summary: Summary) -> None:
    write_json(run_dir / SUMMARY_FILE, summary.to_json())


def read_summary(run_dir: Path) -> Summary | None:
    """The stored summary, or None when there is none or it cannot be read (then rebuild it)."""
    path = run_dir / SUMMARY_FILE
    if not path.is_file():
        return None
    try:
        return Summary.from_json(read_json(path))
    except (ResultsError, TypeError, ValueError):
        return None


COMPETITION_FILE = "competition.json"


def write_competition(folder: Path, result: CompetitionResult) -> None:
    write_json(folder / COMPETITION_FILE, result.to_json())


def read_competition(folder: Path) -> CompetitionResult:
    try:
        return CompetitionResult.from_json(read_json(folder / COMPETITION_FILE))
    except (TypeError, ValueError, KeyError) as exc:
        raise ResultsError(f"{folder / COMPETITION_FILE} is malformed ({exc})") from None


def write_tables(run_dir: Path, requests: pd.DataFrame, power: pd.DataFrame | None,
                 items: pd.DataFrame | None = None) -> None:
    _write_parquet(requests, run_dir / REQUESTS_TABLE, index=False)
    if power is not None and len(power):
        _write_parquet(power, run_dir / POWER_TABLE, index=False)
    if items is not None:
        _write_parquet(items, run_dir / ITEMS_TABLE, index=True)


def _write_parquet(frame: pd.DataFrame, path: Path, *, index: bool) -> None:
    tmp = path.with_suffix(".parquet.tmp")
    try:
        frame.to_parquet(tmp, index=index)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_parquet(path: Path) -> pd.DataFrame | None:
    """A stored table, or None when it is missing or unreadable (truncated by a crash)."""
    if not path.is_file():
        return None
    try:
        return pd.read_parquet(path)
    except Exception:  # pyarrow raises several types for a damaged file; the journal is the truth
        return None


def read_request_journal(run_dir: Path) -> pd.DataFrame:
    """Every complete line of the journal, in the typed row schema; a torn line is skipped."""
    path = run_dir / REQUEST_JOURNAL
    rows = []
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return request_frame(rows)


def read_requests(run_dir: Path) -> pd.DataFrame:
    """The raw request table with `retried` marked: the journal where there is one (the source
    of truth), else the consolidated parquet (archived runs kept without their journals)."""
    if not has_request_journal(run_dir):
        stored = _read_parquet(run_dir / REQUESTS_TABLE)
        if stored is not None:
            return mark_retried(conform(stored))
    return mark_retried(read_request_journal(run_dir))


def _empty_power() -> pd.DataFrame:
    empty = pd.DataFrame({k: pd.Series(dtype="float64") for k in POWER_FIELDS})
    return empty.astype({"t_ns": "int64", "gpu": "int64"})


def read_power_journal(run_dir: Path) -> pd.DataFrame:
    path = run_dir / POWER_JOURNAL
    if not path.exists():
        return _empty_power()
    try:
        frame = pd.read_csv(path, on_bad_lines="skip")
    except pd.errors.EmptyDataError:
        return _empty_power()
    for col in POWER_FIELDS:
        frame[col] = pd.to_numeric(frame[col], errors="coerce") if col in frame else float("nan")
    frame = frame.dropna(subset=["t_ns", "gpu"])
    return dedupe_power(frame.astype({"t_ns": "int64", "gpu": "int64", "power_w": "float64"}))


def dedupe_power(power: pd.DataFrame) -> pd.DataFrame:
    """One sample per (time, GPU): a trace appended again by a resumed segment adds nothing."""
    return power.drop_duplicates(["t_ns", "gpu"], keep="first").sort_values(["t_ns", "gpu"], ignore_index=True)


def read_power(run_dir: Path) -> pd.DataFrame:
    if not (run_dir / POWER_JOURNAL).exists():
        stored = _read_parquet(run_dir / POWER_TABLE)
        if stored is not None:
            return stored
    return read_power_journal(run_dir)


@dataclass(frozen=True)
class RunData:
    """Everything stored about one run. `summary` is None and `stale` is true when the tables or
    the summary are missing or damaged (a killed run): `finalize.open_run` rebuilds them."""

    dir: Path
    manifest: Manifest
    requests: pd.DataFrame
    power: pd.DataFrame
    summary: Summary | None
    stale: bool = False

    @property
    def run_id(self) -> str:
        return self.manifest.run_id


def load_run(run_dir: Path) -> RunData:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ResultsError(f"run folder {run_dir} not found")
    manifest = read_manifest(run_dir)
    requests = _read_parquet(run_dir / REQUESTS_TABLE)
    power = _read_parquet(run_dir / POWER_TABLE)
    summary = read_summary(run_dir)
    has_power = (run_dir / POWER_JOURNAL).exists()
    stale = requests is None or summary is None or (power is None and has_power)
    if requests is None:
        requests = read_requests(run_dir)
    elif "retried" not in requests:
        requests = mark_retried(conform(requests))
    else:
        requests = conform(requests)
    if power is None:
        power = read_power_journal(run_dir)
    return RunData(run_dir, manifest, requests, power, summary, stale)
