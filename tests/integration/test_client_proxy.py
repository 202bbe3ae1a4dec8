"""The client through a real proxy process on loopback (tests/proxy_server.py) to the mock server:
absolute form for http, a CONNECT tunnel and TLS for https; loopback and NO_PROXY hosts direct."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys

import pytest

from harness.client import ChatClient, StreamResult
from tests.conftest import ROOT, started_processes
from tests.integration.test_client import body


class Proxy:
    def __init__(self, *args: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.proxy_server", *args], stdout=subprocess.PIPE,
                                     text=True, cwd=ROOT)
        self.port = int(self.proc.stdout.readline().split()[-1])
        self.tls_port = int(self.proc.stdout.readline().split()[-1]) if "--tls-cert" in args else None
        self.url = f"http://127.0.0.1:{self.port}"

    def lines(self) -> list[str]:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=5)
        return out.splitlines()


@pytest.fixture
def proxy():
    yield from started_processes(Proxy)


def send(url: str, environ: dict, n: int = 2) -> list[StreamResult]:
    async def go():
        async with ChatClient(url, environ=environ) as client:
            return [await client.stream(body(), 5.0) for _ in range(n)]
    return asyncio.run(go())


def test_http_through_the_proxy_in_absolute_form_and_direct_where_it_should(mock_server, proxy):
    server, p = mock_server("--tokens", "3"), proxy()
    env = {"HTTP_PROXY": f"http://bench:secret@127.0.0.1:{p.port}"}
    # A name only the proxy resolves: answers prove the requests went through it.
    results = send(f"http://gpu-node.invalid:{server.port}/v1", env)
    assert [r.status for r in results] == ["ok", "ok"] and results[0].completion_tokens == 3
    assert [r.status for r in send(f"http://127.0.0.1:{server.port}/v1", env, n=1)] == ["ok"]  # loopback: direct
    direct = send(f"http://gpu-node.invalid:{server.port}/v1", {**env, "NO_PROXY": ".invalid"}, n=1)[0]
    assert direct.status == "connection"  # direct, and no DNS knows the name
    lines = p.lines()
    assert lines == [f"FORWARD POST http://gpu-node.invalid:{server.port}/v1/chat/completions HTTP/1.1 "
                     "auth=Basic YmVuY2g6c2VjcmV0"] * 2


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the test certificate")
def test_https_through_a_connect_tunnel(mock_server, proxy, tmp_path, monkeypatch):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=gpu-node.invalid", "-addext", "subjectAltName=DNS:gpu-node.invalid", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client trusts the test certificate (OpenSSL reads it)
    server = mock_server("--tokens", "2")
    p = proxy("--tls-cert", str(cert), "--tls-key", str(key), "--tls-upstream", str(server.port))
    results = send(f"https://gpu-node.invalid:{p.tls_port}/v1", {"HTTPS_PROXY": p.url})
    assert [r.status for r in results] == ["ok", "ok"] and results[1].text
    assert set(p.lines()) == {f"CONNECT gpu-node.invalid:{p.tls_port}"}
