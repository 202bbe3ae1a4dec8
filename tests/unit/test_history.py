"""The history database, and alarms over a history built from the recorded H200 runs. The tests that
take `db` run twice: on SQLite and on a throwaway PostgreSQL server (tests/postgres.py)."""

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
from tests.conftest import FIXTURES, H200_RUNS, bench, cli

STEADY = [H200_RUNS / "bf16-c1-r1", H200_RUNS / "bf16-c1-r2"]  # one server, steady state: 208.6 and 207.0 J


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path) -> str:
    """A history database that does not exist yet: a SQLite path, or an empty PostgreSQL database's URL."""
    return str(tmp_path / "history.sqlite") if request.param == "sqlite" else request.getfixturevalue("postgres_url")


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


def recorded_history(tmp_path, nights=12, step_from=None, scale=1.10, db=None):
    db = db or str(tmp_path / "history.sqlite")
    rows = []
    for k in range(1, nights + 1):
        night = f"2026-12-{k:02d}"
        run = copy_run(STEADY[k % 2], tmp_path / "runs" / f"bf16-{night}",
                       scale if step_from is not None and k >= step_from else 1.0)
        rows.append(row_from_run(load_run(run), night_id=night))
    with History(db) as history:
        history.add(rows)
    return db


def test_schema_is_created_versioned_and_a_newer_one_refused(db):
    from sqlalchemy import text

    with History(db) as history:
        assert history.schema_version() == SCHEMA_VERSION
        history.add([row_from_run(load_run(STEADY[0]))])
        with history.engine.begin() as conn:
            conn.execute(text("UPDATE schema_info SET version = 99"))
    with pytest.raises(HistoryError, match="schema 99"):
        History(db)


def test_sqlite_runs_in_wal_mode(tmp_path):
    path = tmp_path / "h.sqlite"
    with History(str(path)) as history:
        history.add([row_from_run(load_run(STEADY[0]))])
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_row_carries_what_makes_runs_comparable_and_its_intervals(tmp_path):
    row = row_from_run(load_run(STEADY[0]), night_id="n1")
    assert row.variant == "bf16" and row.concurrency == 1 and row.gpu_name == "NVIDIA H200"
    assert row.vllm_version == "0.23.0" and row.driver_version == "580.159.04" and row.suite_hash
    assert row.j_per_request == pytest.approx(208.62, abs=0.01)
    assert row.j_per_request_low < row.j_per_request < row.j_per_request_high
    assert row.quality == 0.0 and row.flags == "[]"


def test_import_twice_replaces_the_run(db):
    with History(db) as history:
        history.add([row_from_run(load_run(STEADY[0]), night_id="a")])
    result = cli("history", "import", *STEADY, "--night-id", "b", "--db", db)
    assert result.returncode == 0 and "imported 2 run(s)" in result.stdout, result.stderr
    with History(db) as history:
        assert [r.night_id for r in history.rows()] == ["b", "b"]


def test_the_recorded_protocol_runs_import_and_query(db):
    """`bench history import` of the four-H200 protocol runs, then `bench history` queries on them."""
    protocol = FIXTURES / "h200x4-20261127-protocol"
    runs = [protocol / "fp8-w8a8-c1", protocol / "fp8-c16", protocol / "bf16-competition" / "warm"]
    result = cli("history", "import", *runs, "--db", db)
    assert result.returncode == 0, result.stderr
    table = cli("history", "--db", db, "--variant", "fp8")
    assert table.returncode == 0, table.stderr
    (line,) = [x for x in table.stdout.splitlines() if x.startswith("2026-11-27")]
    assert "sweep-c16" in line and "fp8 c16" in line and "26.78" in line and "complete" in line
    everything = cli("history", "--db", db, "--metric", "quality", "--since", "2026-11-27")
    assert everything.returncode == 0 and len(everything.stdout.splitlines()) == 1 + len(runs)
    assert cli("history", "--db", db, "--since", "2026-11-28").stdout.splitlines() == [table.stdout.splitlines()[0]]
    with History(db, create=False) as history:
        rows = {r.run_dir: r for r in history.rows()}
    assert rows[str(runs[0].resolve())].j_per_request == pytest.approx(163.7405, abs=1e-3)
    assert rows[str(runs[2].resolve())].gpu_uuid == "GPU-a7d887d8-9fe1-475a-4ba1-b80aa0ce8253"


def test_recorded_runs_with_an_injected_step_alarm_at_the_first_bad_night(tmp_path, db):
    recorded_history(tmp_path, step_from=10, db=db)
    result = cli("history", "--db", db, "--variant", "bf16", "--check")
    assert result.returncode == 4, result.stdout + result.stderr
    assert "REGRESSION bf16 c1" in result.stdout and "from night 2026-12-10" in result.stdout
    assert "bf16-2026-12-09" in result.stdout and "bf16-2026-12-10" in result.stdout  # the runs to compare
    with History(db) as history:
        rows = history.rows()
    (alarm,) = judge(rows, ["j_per_request"])
    assert alarm.change.first_bad_night == "2026-12-10" and 0.07 < alarm.change.ci_low_rel < 0.10
    assert judge(rows, ["j_per_request"], night_id="2026-12-10") == []  # one bad night is not yet an alarm
    md, page = history_page(rows, ["j_per_request"], [alarm], tmp_path / "page")
    assert "from night 2026-12-10" in md.read_text() and (tmp_path / "page" / "trend-j_per_request.png").exists()


def test_recorded_runs_without_a_change_raise_nothing(tmp_path):
    db = recorded_history(tmp_path, nights=10)
    with History(db) as history:
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


def test_reading_a_database_without_a_history_creates_no_table(postgres_url):
    from sqlalchemy import create_engine, inspect

    result = cli("history", "--db", postgres_url)
    assert result.returncode == 2 and "no history in postgresql+psycopg://" in result.stderr, result.stderr
    engine = create_engine(postgres_url)
    assert inspect(engine).get_table_names() == []
    engine.dispose()


def test_nights_with_validity_flags_are_marked(tmp_path):
    from dataclasses import replace

    from harness.report.trends import trend_rows

    rows = [row_from_run(load_run(STEADY[0]), night_id="n1"),
            replace(row_from_run(load_run(STEADY[1]), night_id="n2"), flags=json.dumps(["throttled: power cap"]))]
    points = series(rows, "j_per_request")["bf16 c1 GPU-7fe618e2"]
    assert [p.flagged for p in points] == [False, True]
    assert trend_rows(rows, "j_per_request")[1][-1] == "throttled: power cap"


def v1_database(db) -> None:
    """The committed history written by schema version 1 (tests/fixtures/history-v1.sqlite, two recorded H200
    runs), at `db`: the file itself for SQLite; on PostgreSQL its tables as v1 declared them (reflected from
    the file, VARCHAR(512) strings and all) and its rows."""
    from sqlalchemy import MetaData, create_engine, select

    source = FIXTURES / "history-v1.sqlite"
    if "://" not in db:
        shutil.copy(source, db)
        return
    old, new = create_engine(f"sqlite:///{source}"), create_engine(db)
    tables = MetaData()
    tables.reflect(old)
    with old.connect() as read, new.begin() as write:
        tables.create_all(write)
        for table in tables.sorted_tables:
            rows = [{k: v for k, v in r._mapping.items() if k != "id"} for r in read.execute(select(table))]
            write.execute(table.insert(), rows)
    old.dispose()
    new.dispose()


def test_a_version_1_database_is_migrated_on_open(db, tmp_path):
    from dataclasses import replace

    from sqlalchemy import String, inspect

    v1_database(db)
    long_dir = "/" + "deep/" * 150 + "run"  # 751 characters: v1's VARCHAR(512) refuses it on PostgreSQL
    with History(db) as history:
        assert history.schema_version() == SCHEMA_VERSION == 2
        old = history.rows()
        assert [(r.run_id, r.night_id) for r in old] == [("bf16-c1-r1", "2026-11-26"), ("bf16-c1-r2", "2026-11-27")]
        assert old[0].j_per_request == pytest.approx(208.62, abs=0.01)  # the old rows survive, values intact
        assert {r.host for r in old} == {""}  # v1 did not record the host
        history.add([replace(row_from_run(load_run(STEADY[0]), night_id="2026-11-28"), run_dir=long_dir)])
        assert [r.run_dir for r in history.rows()][-1] == long_dir
        if history.engine.dialect.name == "postgresql":
            lengths = [c["type"].length for c in inspect(history.engine).get_columns("runs")
                       if isinstance(c["type"], String)]
            assert lengths and set(lengths) == {None}
    with History(db) as history:  # opening again migrates nothing more
        assert history.schema_version() == 2 and len(history.rows()) == 3


def test_an_older_database_is_migrated_step_by_step(tmp_path, monkeypatch):
    import harness.history as history_module

    path = tmp_path / "h.sqlite"
    with History(str(path)) as history:  # written at the current version
        history.add([row_from_run(load_run(STEADY[0]), night_id="a")])

    def add_note_column(conn, runs):
        from sqlalchemy import text

        conn.execute(text("ALTER TABLE runs ADD COLUMN note TEXT"))

    monkeypatch.setattr(history_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setitem(history_module.MIGRATIONS, SCHEMA_VERSION + 1, add_note_column)
    with History(str(path)) as history:
        assert history.schema_version() == SCHEMA_VERSION + 1 and len(history.rows()) == 1  # the old rows survive
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


def test_postgresql_readers_and_the_writer_do_not_wait_for_each_other(postgres_url):
    """A reader holding a snapshot open does not hold the nightly's write back, and a write in
    progress does not hold a reader (`bench history`) back: it sees the last committed nights."""
    import threading
    from dataclasses import asdict, replace

    import psycopg
    from sqlalchemy.engine import make_url

    with History(postgres_url) as history:
        history.add([row_from_run(load_run(STEADY[0]), night_id="a")])
        url = make_url(postgres_url)
        with psycopg.connect(host=url.host, port=url.port, user=url.username, dbname=url.database) as reader:
            reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            reader.execute("SET lock_timeout = '2s'")
            assert reader.execute("SELECT count(*) FROM runs").fetchone() == (1,)  # its snapshot is taken
            history.add([row_from_run(load_run(STEADY[1]), night_id="a")])  # committed while the reader is open
            assert reader.execute("SELECT count(*) FROM runs").fetchone() == (1,)  # its snapshot is unchanged
        with history.engine.begin() as writing:  # a write in progress: the night's rows, not yet committed
            for path in STEADY:
                row = replace(row_from_run(load_run(path), night_id="b"), run_dir=f"{path}-night-b")
                writing.execute(history.runs.insert().values(**asdict(row)))
            seen = []

            def read():
                with History(postgres_url, create=False) as other:
                    seen.append(other.rows())

            reading = threading.Thread(target=read)
            reading.start()
            reading.join(timeout=10)
            assert not reading.is_alive() and [r.night_id for r in seen[0]] == ["a", "a"]
        assert [r.night_id for r in history.rows()] == ["a", "a", "b", "b"]


def _open_at_once(target: str, openers: int) -> tuple[list[int], list[str]]:
    """`openers` threads open the history at `target` at the same instant: (schema versions, errors)."""
    import threading

    barrier, versions, errors = threading.Barrier(openers), [], []

    def open_it():
        barrier.wait()
        try:
            with History(target) as history:
                versions.append(history.schema_version())
        except HistoryError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=open_it) for _ in range(openers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return versions, errors


def test_nightlies_opening_a_new_database_at_once_create_it_once(db, tmp_path):
    """Openers racing on a new database (threads here, processes in use): one creates it, none fails.
    A lost race shows only now and then (SQLite's switch to WAL failed 6 times in 40 races of four
    before it waited for the lock), so SQLite is raced on several new files."""
    from sqlalchemy import text

    openers = 6
    targets = [str(tmp_path / f"race-{i}.sqlite") for i in range(20)] if db.endswith(".sqlite") else [db]
    for target in targets:
        versions, errors = _open_at_once(target, openers)
        assert errors == [] and versions == [SCHEMA_VERSION] * openers, (target, errors)
        with History(target) as history, history.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM schema_info")).scalar_one() == 1


def test_postgresql_urls_as_people_write_them_and_errors_that_hide_the_password(postgres_server):
    from tests.postgres import USER

    bare = f"postgresql://{USER}@127.0.0.1:{postgres_server.port}/{postgres_server.new_database().rsplit('/')[-1]}"
    with History(bare) as history:  # no driver named: psycopg 3, what the `postgres` extra installs
        assert history.engine.dialect.driver == "psycopg" and history.schema_version() == SCHEMA_VERSION
    with_password = bare.replace(f"{USER}@", f"{USER}:hunter2@")  # the test server trusts any password
    imported = cli("history", "import", STEADY[0], "--db", with_password)
    assert imported.returncode == 0 and "into postgresql+psycopg://***@127.0.0.1" in imported.stdout, imported.stderr
    assert "hunter2" not in imported.stdout + imported.stderr
    secret = f"postgresql://{USER}:hunter2@127.0.0.1:{postgres_server.port}/no_such_db"
    result = cli("history", "import", STEADY[0], "--db", secret)
    assert result.returncode == 2 and "postgresql+psycopg://***@127.0.0.1" in result.stderr, result.stderr
    assert "no_such_db" in result.stderr and "hunter2" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_database_driver_that_is_not_installed_is_one_line():
    result = cli("history", "--db", "postgresql+pg8000://u:pw@127.0.0.1:9/db")
    assert result.returncode == 2 and "driver pg8000 is not installed" in result.stderr, result.stderr
    assert "pw" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def ring_pixels(png) -> int:
    """Pixels of the plot drawn in the validity-flag ring's colour."""
    import numpy as np
    from PIL import Image

    from harness.report.trends import FLAG_COLOR

    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    target = np.array([int(FLAG_COLOR[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(rgb - target).sum(axis=2) < 40).sum())


def test_history_html_rings_flagged_nights_and_names_the_change(tmp_path, db):
    """`bench history --html --check` on a recorded history with a 10 % step from night 10 and validity
    flags on nights 5 and 11: the page names the first bad night, the change with its interval, the runs
    to compare and the flagged night on the new level; the plot rings the flagged nights."""
    from dataclasses import replace

    rows = []
    for k in range(1, 13):
        night = f"2026-12-{k:02d}"
        run = copy_run(STEADY[k % 2], tmp_path / "runs" / f"bf16-{night}", 1.10 if k >= 10 else 1.0)
        row = row_from_run(load_run(run), night_id=night)
        rows.append(replace(row, flags=json.dumps(["stall: 3 requests"])) if k in (5, 11) else row)
    with History(db) as history:
        history.add(rows)
    result = cli("history", "--db", db, "--html", tmp_path / "page", "--check")
    assert result.returncode == 4, result.stdout + result.stderr
    page = (tmp_path / "page" / "history.html").read_text()
    (alarm,) = [line for line in page.splitlines() if "REGRESSION" in line]
    assert "from night 2026-12-10" in alarm and "+10." in alarm and "(CI +" in alarm and "noise" in alarm
    assert "bf16-2026-12-09" in alarm and "bf16-2026-12-10" in alarm  # the runs to compare
    assert "validity flags on night 2026-12-11" in alarm and "2026-12-05" not in alarm  # only the new level's
    assert page.count("stall: 3 requests") == 2  # the flagged runs' rows in the table
    assert "bf16 c1 GPU-7fe618e2" in page  # the table names series as the plot and the alarm do
    assert ring_pixels(tmp_path / "page" / "trend-j_per_request.png") > 50

    with History(db) as history:  # the same nights without flags: no ring
        history.add([replace(r, flags="[]") for r in rows])
    assert cli("history", "--db", db, "--html", tmp_path / "clean").returncode == 0
    assert ring_pixels(tmp_path / "clean" / "trend-j_per_request.png") == 0


def test_a_shared_history_keeps_the_same_path_on_two_hosts_apart(db):
    """Two GPU hosts run the same nightly config from the same checkout path: their run folders have the
    same path, and both runs stay; a run imported again from its own host replaces its row."""
    with History(db) as history:
        history.add([row_from_run(load_run(STEADY[0]), night_id="n1", host=h) for h in ("gpu-a", "gpu-b")])
        history.add([row_from_run(load_run(STEADY[0]), night_id="n2", host="gpu-a")])
        assert sorted((r.host, r.night_id) for r in history.rows()) == [("gpu-a", "n2"), ("gpu-b", "n1")]
    imported = cli("history", "import", STEADY[0], "--db", db, "--night-id", "n3")  # from this machine
    assert imported.returncode == 0, imported.stderr
    with History(db) as history:
        assert len(history.rows()) == 3


def test_a_migration_waits_for_a_reader_then_fails_in_one_line_not_forever(postgres_url, monkeypatch):
    """A dashboard's transaction left open on `runs` holds the migration's lock: the migration gives up
    after MIGRATION_WAIT_S with one line, and succeeds once the reader is gone."""
    import psycopg
    from sqlalchemy.engine import make_url

    import harness.history as history_module

    v1_database(postgres_url)
    monkeypatch.setattr(history_module, "MIGRATION_WAIT_S", 0.5)
    url = make_url(postgres_url)
    with psycopg.connect(host=url.host, port=url.port, user=url.username, dbname=url.database) as reader:
        reader.execute("SELECT count(*) FROM runs").fetchone()  # its transaction stays open
        with pytest.raises(HistoryError, match="lock timeout") as info:
            History(postgres_url)
        assert "\n" not in str(info.value)
    with History(postgres_url) as history:
        assert history.schema_version() == SCHEMA_VERSION and len(history.rows()) == 2


def test_the_password_comes_from_libpq_not_the_url(postgres_server, monkeypatch, tmp_path):
    """As README says for a shared history: no password in the URL (config files, `ps`); libpq reads
    $PGPASSWORD or ~/.pgpass ($PGPASSFILE); without one, one line."""
    postgres_server.add_password_user("teammate", "s3cret-pw")
    postgres_server.admin("CREATE DATABASE team_history OWNER teammate")
    url = f"postgresql://teammate@127.0.0.1:{postgres_server.port}/team_history"
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    refused = cli("history", "import", STEADY[0], "--db", url)
    assert refused.returncode == 2 and "no password supplied" in refused.stderr, refused.stderr
    monkeypatch.setenv("PGPASSWORD", "s3cret-pw")
    assert cli("history", "import", STEADY[0], "--db", url).returncode == 0
    monkeypatch.delenv("PGPASSWORD")
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:{postgres_server.port}:team_history:teammate:s3cret-pw\n")
    pgpass.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    table = cli("history", "--db", url)
    assert table.returncode == 0 and "bf16-c1-r1" in table.stdout, table.stderr


def test_each_series_gets_its_own_panel_and_its_flagged_nights_a_ring(tmp_path):
    """bf16 at 1 in flight (~208 J) and fp8 at 16 (~14 J) on their own y scales; a flag on the second
    series' night is ringed too."""
    from dataclasses import replace

    from PIL import Image

    from harness.report.trends import trend_plot

    bf16 = [row_from_run(load_run(STEADY[k % 2]), night_id=f"n{k}") for k in range(1, 4)]
    fp8 = [replace(row_from_run(load_run(H200_RUNS / "fp8-c16-r1"), night_id=f"n{k}"), run_dir=f"fp8-{k}",
                   flags=json.dumps(["stall"]) if k == 2 else "[]") for k in range(1, 4)]
    one, two = tmp_path / "one.png", tmp_path / "two.png"
    trend_plot(bf16, "j_per_request", [], one)
    trend_plot(bf16 + fp8, "j_per_request", [], two)
    assert Image.open(two).height > 1.5 * Image.open(one).height  # a second panel
    assert ring_pixels(one) == 0 and ring_pixels(two) > 50
