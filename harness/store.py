"""The results folder of one run, on disk. Every file a run writes goes through here.

Layout of `results/<run-id>/`:
  manifest.json       what was run: variant, server command, sampling, suite + hash, versions,
                      hardware, meter; status (running / complete / incomplete) and its cause
  requests.jsonl      journal: one line per finished request, appended and fsynced as it arrives
  power.csv           journal: power samples appended as the run goes
  requests.parquet    consolidated request table (+ energy and score columns)
  power.parquet       consolidated power trace
  summary.json        counts, latency percentiles, energy block, quality block, validity flags
  server.log          the server's own output (launched servers)

Journals are the source of truth while a run is in flight; the parquet files and summary are
rebuilt from them (and can be again: `bench reanalyze`, `bench score`)."""

from __future__ import annotations

import csv
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.errors import ResultsError
from harness.records import SCHEMA_VERSION, PowerSample, RequestRecord

POWER_FIELDS = ["t_ns", "gpu", "power_w", "energy_mj", "temperature_c", "sm_clock_mhz", "throttle_reasons"]
MIN_FREE_BYTES = 200 * 1024 * 1024


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, data: dict) -> None:
    _atomic_write(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path} not found") from None
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno})") from None


def journal_line(record: RequestRecord) -> str:
    """One journal line (JSON, ASCII-escaped) of a request record."""
    return json.dumps(record.to_dict()) + "\n"


class RunStore:
    """Writer for one run folder. `open_new` refuses an existing run; `open_resume` reopens one."""

    def __init__(self, run_dir: Path):
        self.dir = run_dir
        self._lock_fd: int | None = None

    @classmethod
    def open_new(cls, results_dir: Path, run_id: str) -> RunStore:
        check_writable(results_dir)
        run_dir = results_dir / run_id
        if (run_dir / "manifest.json").exists():
            raise ResultsError(f"run id '{run_id}' already exists in {results_dir}; pick another --run-id "
                               f"or continue it with --resume {run_dir}")
        run_dir.mkdir(parents=True, exist_ok=True)
        store = cls(run_dir)
        store._lock()
        return store

    @classmethod
    def open_resume(cls, run_dir: Path) -> RunStore:
        if not (run_dir / "manifest.json").exists():
            raise ResultsError(f"{run_dir} is not a run folder (no manifest.json)")
        check_writable(run_dir)
        store = cls(run_dir)
        store._lock()
        return store

    def _lock(self) -> None:
        path = self.dir / "run.lock"
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
            (self.dir / "run.lock").unlink(missing_ok=True)

    # journals -------------------------------------------------------------------------------
    def append_request(self, record: RequestRecord) -> None:
        self.append_requests([record])

    def append_requests(self, records: list[RequestRecord]) -> None:
        self.append_request_lines([journal_line(r) for r in records])

    def append_request_lines(self, lines: list[str]) -> None:
        """Append journal lines (from `journal_line`) in order with one fsync: the run loop's group
        commit, on a writer thread that then holds the GIL only for the write itself."""
        with open(self.dir / "requests.jsonl", "a") as f:
            f.write("".join(lines))
            f.flush()
            os.fsync(f.fileno())

    def append_power(self, samples: list[PowerSample]) -> None:
        if not samples:
            return
        path = self.dir / "power.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(POWER_FIELDS)
            for s in samples:
                writer.writerow(["" if getattr(s, k) is None else getattr(s, k) for k in POWER_FIELDS])
            f.flush()
            os.fsync(f.fileno())

    def write_manifest(self, manifest: dict) -> None:
        write_json(self.dir / "manifest.json", {"schema_version": SCHEMA_VERSION, **manifest})



def write_summary(run_dir: Path, summary: dict) -> None:
    write_json(run_dir / "summary.json", {"schema_version": SCHEMA_VERSION, **summary})


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


def read_requests(run_dir: Path) -> pd.DataFrame:
    """The request table: the journal where there is one (the source of truth while and after a
    run), else the consolidated parquet (archived runs kept without their journals)."""
    if not (run_dir / "requests.jsonl").exists() and (run_dir / "requests.parquet").exists():
        stored = pd.read_parquet(run_dir / "requests.parquet")
        # Older runs lack the newer record fields: they were not reported then (None).
        return mark_retried(stored.reindex(columns=list(RequestRecord.__dataclass_fields__)))
    return mark_retried(read_request_journal(run_dir))


def mark_retried(requests: pd.DataFrame) -> pd.DataFrame:
    """`retried` is true for every attempt but the last of its (item, sample): a retry within a
    run, or an item re-sent after `--resume`. Only the last attempt counts for quality/latency;
    every attempt counts for energy."""
    out = requests.sort_values("start_ns", kind="stable", ignore_index=True)
    out["retried"] = out.duplicated(["item_id", "sample_index"], keep="last")
    return out


def read_power(run_dir: Path) -> pd.DataFrame:
    if not (run_dir / "power.csv").exists() and (run_dir / "power.parquet").exists():
        return pd.read_parquet(run_dir / "power.parquet")
    return read_power_journal(run_dir)


def read_request_journal(run_dir: Path) -> pd.DataFrame:
    """Every complete line of the journal; a torn last line (crash mid-write) is skipped."""
    path = run_dir / "requests.jsonl"
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    columns = list(RequestRecord.__dataclass_fields__)
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype({"first_token_ns": "Int64", "prompt_tokens": "Int64", "completion_tokens": "Int64",
                         "http_status": "Int64", "seed": "Int64"})


def read_power_journal(run_dir: Path) -> pd.DataFrame:
    path = run_dir / "power.csv"
    if not path.exists():
        empty = pd.DataFrame({k: pd.Series(dtype="float64") for k in POWER_FIELDS})
        return empty.astype({"t_ns": "int64", "gpu": "int64"})
    try:
        frame = pd.read_csv(path, on_bad_lines="skip")
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=POWER_FIELDS)
    frame = frame.dropna(subset=["t_ns", "gpu", "power_w"])
    return frame.astype({"t_ns": "int64", "gpu": "int64", "power_w": "float64"})


@dataclass
class RunData:
    """Everything stored about one finished (or interrupted) run."""

    dir: Path
    manifest: dict
    requests: pd.DataFrame
    power: pd.DataFrame
    summary: dict

    @property
    def run_id(self) -> str:
        return self.manifest.get("run_id", self.dir.name)


def load_run(run_dir: Path) -> RunData:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ResultsError(f"run folder {run_dir} not found")
    manifest = read_json(run_dir / "manifest.json")
    version = manifest.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ResultsError(f"{run_dir} was written with result schema {version}; this harness reads up to "
                           f"{SCHEMA_VERSION} (upgrade energy-harness)")
    parquet = run_dir / "requests.parquet"
    requests = pd.read_parquet(parquet) if parquet.exists() else read_requests(run_dir)
    power_parquet = run_dir / "power.parquet"
    power = pd.read_parquet(power_parquet) if power_parquet.exists() else read_power_journal(run_dir)
    summary = read_json(run_dir / "summary.json") if (run_dir / "summary.json").exists() else {}
    return RunData(run_dir, manifest, requests, power, summary)


def write_tables(run_dir: Path, requests: pd.DataFrame, power: pd.DataFrame | None) -> None:
    requests.to_parquet(run_dir / "requests.parquet", index=False)
    if power is not None and len(power):
        power.to_parquet(run_dir / "power.parquet", index=False)
