"""Which proxy a request goes through (harness.proxies.proxy_route), from the environment."""

import http.server
import json
import threading
import urllib.request

import pytest

from harness import proxies
from harness.errors import ConfigError
from harness.proxies import ProxyRoute, proxy_route

P = {"HTTP_PROXY": "http://proxy.example:3128", "HTTPS_PROXY": "http://tls-proxy.example:8080"}


def test_scheme_variables_and_lowercase_first():
    assert proxy_route("http", "gpu.example", 8000, P) == ProxyRoute("proxy.example", 3128, None,
                                                                     "http://proxy.example:3128")
    assert proxy_route("https", "gpu.example", 443, P).host == "tls-proxy.example"
    assert proxy_route("http", "gpu.example", 80, {**P, "http_proxy": "lower.example:1"}).host == "lower.example"
    assert proxy_route("https", "gpu.example", 443, {"ALL_PROXY": "http://all.example"}).port == 80
    assert proxy_route("http", "gpu.example", 80, {}) is None


def test_loopback_is_always_direct():
    for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "api.localhost"):
        assert proxy_route("http", host, 8000, P) is None, host


@pytest.mark.parametrize("no_proxy, host, port, direct", [
    ("*", "gpu.example", 80, True),
    ("example", "gpu.example", 80, True),  # a parent domain covers its subdomains
    (".example", "gpu.example", 80, True),
    ("gpu.example", "gpu.example", 80, True),
    ("pu.example", "gpu.example", 80, False),  # a suffix that is not a domain boundary
    ("10.0.0.0/8", "10.1.2.3", 80, True),
    ("10.1.2.3", "10.1.2.3", 80, True),
    ("10.1.2.4", "10.1.2.3", 80, False),
    ("gpu.example:8000", "gpu.example", 8000, True),
    ("gpu.example:8000", "gpu.example", 9000, False),
    ("other.example, gpu.example", "gpu.example", 80, True),
    ("[fd00::1]:80", "fd00::1", 80, True),
])
def test_no_proxy(no_proxy, host, port, direct):
    assert (proxy_route("http", host, port, {**P, "NO_PROXY": no_proxy}) is None) == direct


def test_credentials_become_basic_proxy_authorization_and_other_schemes_are_refused():
    route = proxy_route("http", "gpu.example", 80, {"HTTP_PROXY": "http://user:p%40ss@proxy.example:3128"})
    assert route.authorization == "Basic dXNlcjpwQHNz" and "user" not in route.url  # user:p@ss
    with pytest.raises(ConfigError, match="socks5://proxy.example:1080.*not an http:// proxy.*NO_PROXY=gpu.example"):
        proxy_route("http", "gpu.example", 80, {"HTTP_PROXY": "socks5://u:secret@proxy.example:1080"})
    try:
        proxy_route("http", "gpu.example", 80, {"HTTP_PROXY": "socks5://u:secret@proxy.example:1080"})
    except ConfigError as exc:
        assert "secret" not in str(exc)


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every GET with {"ok": true} and remembers the request line it was sent."""

    seen: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).seen.append(self.requestline)
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def recorder():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Recorder.seen = []
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_control_calls_to_loopback_never_go_through_a_proxy(recorder, monkeypatch):
    """A launched server's health checks and cache resets (server.py, protocol.py) reach 127.0.0.1
    directly even with a proxy set; urllib alone would send them to the (here: dead) proxy."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # the discard port: nothing answers
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with proxies.urlopen(urllib.request.Request(f"http://127.0.0.1:{recorder}/health"), timeout=5) as response:
        assert json.loads(response.read()) == {"ok": True}
    assert _Recorder.seen == ["GET /health HTTP/1.1"]


def test_control_calls_elsewhere_go_through_the_proxy(recorder, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{recorder}")  # the recorder plays the proxy
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with proxies.urlopen(urllib.request.Request("http://gpu.example:8000/health"), timeout=5) as response:
        assert json.loads(response.read()) == {"ok": True}
    assert _Recorder.seen == ["GET http://gpu.example:8000/health HTTP/1.1"]  # absolute form: a proxy's request
