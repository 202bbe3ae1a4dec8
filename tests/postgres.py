"""A throwaway PostgreSQL server on loopback for the history tests (`postgres_url` fixture).

`initdb` into a temporary folder, the postmaster started as a child of the test session on a free
loopback port with its unix socket in that folder, one fresh database per test, and the server
stopped (fast shutdown, SIGKILL after 10 s) and its folder removed when the session ends. The
postmaster is not started with `pg_ctl start`, which detaches it: as our child with a parent-death
signal, it dies with the session even when pytest itself is killed, and its backends follow it.

The binaries are looked up on PATH, then where Debian puts them (/usr/lib/postgresql/*/bin);
without them the tests are skipped, saying so. PostgreSQL refuses to run as root: as root the
server runs as the `postgres` user (Debian's package creates it), else as `nobody`."""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

USER = "bench"
START_TIMEOUT_S = 30.0
# A free port is only free when it is picked: another worker's connection or server can take it before the
# postmaster binds it. Then the postmaster exits at once, and it is started again on another port.
BIND_ATTEMPTS = 5


def postgres_bin() -> Path | None:
    """The folder holding initdb and postgres, or None."""
    on_path = shutil.which("initdb")
    candidates = [Path(os.path.realpath(on_path)).parent] if on_path else []
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    return next((c for c in candidates if (c / "initdb").is_file() and (c / "postgres").is_file()), None)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="bench-pg-"))  # not under pytest's 0700 tmp: the server user reads it
        self.data, self.socket_dir = self.root / "data", self.root / "socket"
        self.port = 0  # picked when the postmaster starts
        self.proc: subprocess.Popen | None = None
        self._names = itertools.count(1)
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                account = pwd.getpwnam("nobody")
            self._as_user = ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--clear-groups"]
            os.chown(self.root, account.pw_uid, account.pw_gid)
        self.socket_dir.mkdir()
        if self._as_user:
            os.chown(self.socket_dir, account.pw_uid, account.pw_gid)

    def start(self) -> None:
        init = subprocess.run([*self._as_user, str(self.bindir / "initdb"), "-D", str(self.data), "-U", USER,
                               "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"],
                              capture_output=True, text=True, timeout=120)
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr.strip()[-500:]}")
        for _ in range(BIND_ATTEMPTS):
            if self._launch():
                return
        log = self._log()[-800:]
        self.stop()
        raise RuntimeError(f"postgres found no free port in {BIND_ATTEMPTS} attempts: {log}")

    def _launch(self) -> bool:
        """Start the postmaster on a newly picked port and wait until it accepts connections; False when
        the port was taken before it could bind it."""
        self.port = _free_port()
        # Durability off: a throwaway server, and the tests must be quick.
        cmd = [str(self.bindir / "postgres"), "-D", str(self.data), "-h", "127.0.0.1", "-p", str(self.port),
               "-k", str(self.socket_dir), "-c", "fsync=off", "-c", "synchronous_commit=off",
               "-c", "full_page_writes=off"]
        if self._as_user:  # setpriv sets the parent-death signal after changing user (a uid change clears it)
            cmd = [*self._as_user, "--pdeathsig=SIGKILL", *cmd]
        with open(self.root / "server.log", "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log,
                                         preexec_fn=None if self._as_user else _die_with_parent)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                # Through the unix socket, which is this server's alone: over TCP the port's other taker (another
                # worker's server) could answer. The postmaster opens it only once it holds its TCP port.
                self.admin("SELECT 1", host=str(self.socket_dir))
                return True
            except Exception:  # not accepting connections yet
                exited = self.proc.poll() is not None
                if exited and "Address already in use" in self._log():
                    return False
                if exited or time.monotonic() > deadline:
                    log = self._log()[-800:]
                    self.stop()
                    raise RuntimeError(f"postgres did not start: {log}") from None
                time.sleep(0.05)

    def _log(self) -> str:
        return (self.root / "server.log").read_text(errors="replace")

    def admin(self, sql: str, host: str = "127.0.0.1") -> None:
        """One statement on the maintenance database, outside a transaction (CREATE DATABASE needs that)."""
        import psycopg

        with psycopg.connect(host=host, port=self.port, user=USER, dbname="postgres", autocommit=True,
                             connect_timeout=2) as conn:
            conn.execute(sql)

    def new_database(self) -> str:
        """A fresh, empty database; its SQLAlchemy URL."""
        name = f"history_{next(self._names)}"
        self.admin(f"CREATE DATABASE {name}")
        return self.url(name)

    def add_password_user(self, name: str, password: str) -> None:
        """A login that must give its password over TCP (the session's own user is trusted)."""
        self.admin(f"CREATE ROLE {name} LOGIN PASSWORD '{password}' CREATEDB")
        hba = self.data / "pg_hba.conf"
        hba.write_text(f"host all {name} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())  # first match wins
        self.admin("SELECT pg_reload_conf()")

    def url(self, name: str) -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGINT)  # fast shutdown: ends the backends, then the postmaster
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def _die_with_parent() -> None:
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@pytest.fixture(scope="session")
def postgres_server():
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL binaries not found (initdb on PATH or /usr/lib/postgresql/*/bin); .ci/run installs "
                    "Debian's postgresql")
    server = PostgresServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """The URL of a fresh, empty database on the session's PostgreSQL server."""
    return postgres_server.new_database()
