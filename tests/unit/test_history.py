"""The history database, and alarms over a history built from the recorded H200 runs."""

import functools
import json
import shutil
import sqlite3

import pandas as pd
import pytest

from harness.errors import HistoryError
from harness.history import SCHEMA_VERSION, History, judge, row_from_run, series
from harness.report.trends import history_page
from harness.store import load_run
from tests.conftest import H200_RUNS, bench

STEADY = [H200_RUNS / "bf16-c1-r1", H200_RUNS / "bf16-c1-r2"]  # one server, steady state: 208.6 and 207.0 J


@functools.cache
def scaled_requests(source, energy_scale):
    requests = pd.read_parquet(source / "requests.parquet")
    for column in ("energy_j", "energy_above_idle_j"):
        requests[column] *= energy_scale
    return requests


def copy_run(source, target, energy_scale=1.0):
    """A recorded run as another night's run; `energy_scale` injects a change in J/request."""
    target.mkdir(parents=True)
    summary = json.loads((source / "summary.json").read_text())
    for key in ("j_per_request_mean", "above_idle_j_per_request_mean", "total_j"):
        summary["energy"][key] *= energy_scale
    (target / "summary.json").write_text(json.dumps(summary))
    scaled_requests(source, energy_scale).to_parquet(target / "requests.parquet", index=False)
    manifest = json.loads((source / "manifest.json").read_text())
    manifest["run_id"] = target.name
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def recorded_history(tmp_path, nights=12, step_from=None, scale=1.10):
    db = tmp_path / "history.sqlite"
    rows = []
    for k in range(1, nights + 1):
        night = f"2026-12-{k:02d}"
        run = copy_run(STEADY[k % 2], tmp_path / "runs" / f"bf16-{night}",
                       scale if step_from is not None and k >= step_from else 1.0)
        rows.append(row_from_run(load_run(run), night_id=night))
    with History(str(db)) as history:
        history.add(rows)
    return db


def test_schema_is_created_versioned_and_in_wal_mode(tmp_path):
    path = tmp_path / "h.sqlite"
    with History(str(path)) as history:
        assert history.schema_version() == SCHEMA_VERSION
        history.add([row_from_run(load_run(STEADY[0]))])
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.execute("UPDATE schema_info SET version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(HistoryError, match="schema 99"):
        History(str(path))


def test_a_row_carries_what_makes_runs_comparable_and_its_intervals(tmp_path):
    row = row_from_run(load_run(STEADY[0]), night_id="n1")
    assert row.variant == "bf16" and row.concurrency == 1 and row.gpu_name == "NVIDIA H200"
    assert row.vllm_version == "0.23.0" and row.driver_version == "580.159.04" and row.suite_hash
    assert row.j_per_request == pytest.approx(208.62, abs=0.01)
    assert row.j_per_request_low < row.j_per_request < row.j_per_request_high
    assert row.quality == 0.0 and row.flags == "[]"


def test_import_twice_replaces_the_run(tmp_path):
    db = tmp_path / "h.sqlite"
    with History(str(db)) as history:
        history.add([row_from_run(load_run(STEADY[0]), night_id="a")])
    result = bench("history", "import", *STEADY, "--night-id", "b", "--db", db)
    assert result.returncode == 0 and "imported 2 run(s)" in result.stdout, result.stderr
    with History(str(db)) as history:
        assert [r.night_id for r in history.rows()] == ["b", "b"]


def test_recorded_runs_with_an_injected_step_alarm_at_the_first_bad_night(tmp_path):
    db = recorded_history(tmp_path, step_from=10)
    result = bench("history", "--db", db, "--variant", "bf16", "--check")
    assert result.returncode == 4, result.stdout + result.stderr
    assert "REGRESSION bf16 c1" in result.stdout and "from night 2026-12-10" in result.stdout
    assert "bf16-2026-12-09" in result.stdout and "bf16-2026-12-10" in result.stdout  # the runs to compare
    with History(str(db)) as history:
        rows = history.rows()
    (alarm,) = judge(rows, ["j_per_request"])
    assert alarm.change.first_bad_night == "2026-12-10" and 0.07 < alarm.change.ci_low_rel < 0.10
    assert judge(rows, ["j_per_request"], night_id="2026-12-10") == []  # one bad night is not yet an alarm
    md, page = history_page(rows, ["j_per_request"], [alarm], tmp_path / "page")
    assert "from night 2026-12-10" in md.read_text() and (tmp_path / "page" / "trend-j_per_request.png").exists()


def test_recorded_runs_without_a_change_raise_nothing(tmp_path):
    db = recorded_history(tmp_path, nights=10)
    with History(str(db)) as history:
        rows = history.rows()
    assert len(rows) == 10 and judge(rows, ["j_per_request", "quality"]) == []
    for night in range(6, 11):  # nor on any earlier night
        assert judge(rows, ["j_per_request"], night_id=f"2026-12-{night:02d}") == []


def test_series_average_a_nights_repeats_and_keep_flags():
    rows = [row_from_run(load_run(p), night_id="n1") for p in STEADY]
    (points,) = series(rows, "j_per_request").values()
    assert len(points) == 1 and points[0].value == pytest.approx((208.62 + 207.04) / 2, abs=0.01)
    assert len(points[0].runs) == 2 and not points[0].flagged


def test_a_bad_database_url_is_one_line():
    with pytest.raises(HistoryError, match="history database nosuchdialect://x/y") as info:
        History("nosuchdialect://x/y")
    assert "\n" not in str(info.value)


def test_a_reader_holding_a_snapshot_does_not_block_the_writer(tmp_path):
    path = tmp_path / "h.sqlite"
    with History(str(path)) as history:
        history.add([row_from_run(load_run(STEADY[0]), night_id="a")])
        reader = sqlite3.connect(path, timeout=0.1)
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM runs").fetchone() == (1,)  # a read transaction stays open
        history.add([row_from_run(load_run(STEADY[1]), night_id="a")])  # WAL: no "database is locked"
        assert reader.execute("SELECT count(*) FROM runs").fetchone() == (1,)  # its snapshot is unchanged
        reader.rollback()
        assert reader.execute("SELECT count(*) FROM runs").fetchone() == (2,)
        reader.close()


def test_reading_a_missing_history_is_one_line_and_creates_nothing(tmp_path):
    result = bench("history", "--db", tmp_path / "none.sqlite")
    assert result.returncode == 2 and "no history database at" in result.stderr
    assert not (tmp_path / "none.sqlite").exists()


def test_nights_with_validity_flags_are_marked(tmp_path):
    from dataclasses import replace

    from harness.report.trends import trend_rows

    rows = [row_from_run(load_run(STEADY[0]), night_id="n1"),
            replace(row_from_run(load_run(STEADY[1]), night_id="n2"), flags=json.dumps(["throttled: power cap"]))]
    points = series(rows, "j_per_request")["bf16 c1 GPU-7fe618e2"]
    assert [p.flagged for p in points] == [False, True]
    assert trend_rows(rows, "j_per_request")[1][-1] == "throttled: power cap"


def test_an_older_database_is_migrated_step_by_step(tmp_path, monkeypatch):
    import harness.history as history_module

    path = tmp_path / "h.sqlite"
    with History(str(path)) as history:  # written at version 1
        history.add([row_from_run(load_run(STEADY[0]), night_id="a")])

    def add_note_column(conn, runs, info):
        from sqlalchemy import text

        conn.execute(text("ALTER TABLE runs ADD COLUMN note TEXT"))

    monkeypatch.setattr(history_module, "SCHEMA_VERSION", 2)
    monkeypatch.setitem(history_module.MIGRATIONS, 2, add_note_column)
    with History(str(path)) as history:
        assert history.schema_version() == 2 and len(history.rows()) == 1  # the old rows survive
    columns = [r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(runs)")]
    assert "note" in columns


def test_tonight_against_previous_nights_with_its_noise(tmp_path):
    from harness.history import against_history

    db = recorded_history(tmp_path, nights=10, step_from=10)
    with History(str(db)) as history:
        rows = history.rows()
    (entry,) = against_history(rows, ["j_per_request"], "2026-12-10")
    assert entry["nights_before"] == 9 and entry["change_rel"] == pytest.approx(0.10, abs=0.01)
    assert 0.005 < entry["noise_rel"] < 0.02  # ~1 %: the larger of the night-to-night and per-request spread
    assert against_history(rows, ["j_per_request"], "2026-13-01") == []


def test_intervals_cover_the_requests_the_headline_covers(tmp_path):
    """A warm competition run has cache hits: the headline J/request is first-seen prompts only, and
    so is its interval (one definition of which requests count, harness.energy.analysis)."""
    from harness.finalize import finalize_run
    from tests.conftest import FIXTURES

    run = tmp_path / "warm"
    shutil.copytree(FIXTURES / "h200x4-20261127-protocol" / "bf16-competition" / "warm", run)
    finalize_run(run)
    row = row_from_run(load_run(run))
    assert json.loads((run / "summary.json").read_text())["energy"]["headline_requests"] == "first-seen"
    assert (row.j_per_request_low + row.j_per_request_high) / 2 == pytest.approx(row.j_per_request, rel=1e-9)
