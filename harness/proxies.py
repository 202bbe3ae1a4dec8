"""Which proxy a request to a server goes through, decided once for every HTTP call `bench` makes:
the streaming client's requests (harness/client.py) and the control calls (health, model list,
version, cache resets) alike, so a launched server on loopback is never asked through a proxy.

The environment's `http_proxy`/`HTTP_PROXY`, `https_proxy`/`HTTPS_PROXY`, `all_proxy`/`ALL_PROXY`
(an http:// proxy) and `no_proxy`/`NO_PROXY` (lowercase first, as curl, urllib and httpx read them);
loopback always goes direct (urllib alone would send 127.0.0.1 to the proxy)."""

from __future__ import annotations

import base64
import ipaddress
import os
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from harness.errors import ConfigError


@dataclass(frozen=True)
class ProxyRoute:
    """How to reach a target through a proxy: connect to host:port, send `authorization` (if any) as
    Proxy-Authorization."""

    host: str
    port: int
    authorization: str | None = None
    url: str = ""  # the proxy as configured, without credentials (for messages)


def _env(environ: Mapping[str, str], name: str) -> str:
    """Lowercase first, as curl, urllib and httpx read them."""
    return (environ.get(name.lower()) or environ.get(name.upper()) or "").strip()


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bypassed(host: str, port: int, no_proxy: str) -> bool:
    """True when NO_PROXY names this host: `*`, the host or a parent domain (`.example.com` or
    `example.com`), an IP address or CIDR block; an entry with `:port` only for that port."""
    host = host.lower().strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        name, entry_port = entry, None
        if entry.startswith("["):  # [::1]:8000
            name, _, rest = entry[1:].partition("]")
            entry_port = rest.lstrip(":") or None
        elif entry.count(":") == 1:
            name, entry_port = entry.split(":")
        if entry_port is not None and entry_port != str(port):
            continue
        if address is not None:
            try:
                if address in ipaddress.ip_network(name, strict=False):
                    return True
            except ValueError:
                pass
            continue
        name = name.lstrip(".")
        if host == name or host.endswith("." + name):
            return True
    return False


def proxy_route(scheme: str, host: str, port: int, environ: Mapping[str, str] | None = None) -> ProxyRoute | None:
    """The proxy a request to scheme://host:port goes through, from the environment; None to go direct
    (loopback, NO_PROXY, or no proxy set). Raises ConfigError for a proxy this client cannot use."""
    env = os.environ if environ is None else environ
    if _is_loopback(host.strip("[]")):
        return None
    url = _env(env, f"{scheme}_proxy") or _env(env, "all_proxy")
    if not url or _bypassed(host, port, _env(env, "no_proxy")):
        return None
    parts = urlsplit(url if "://" in url else f"http://{url}")
    shown = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"
    if parts.scheme != "http" or not parts.hostname:
        raise ConfigError(f"the proxy {shown} for {scheme}://{host} is not an http:// proxy, which is all bench's "
                          f"client speaks; set NO_PROXY={host} to go direct, or use an http:// proxy")
    authorization = None
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        authorization = "Basic " + base64.b64encode(credentials).decode("ascii")
    return ProxyRoute(parts.hostname, parts.port or 80, authorization, shown)


def urlopen(request: urllib.request.Request, timeout: float):
    """urllib's urlopen, routed as `proxy_route` decides: direct (loopback, NO_PROXY, no proxy set),
    else through the environment's proxy as urllib reads it (CONNECT for https)."""
    parts = urlsplit(request.full_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    direct = proxy_route(parts.scheme, parts.hostname or "", port) is None
    handler = urllib.request.ProxyHandler({}) if direct else urllib.request.ProxyHandler()
    return urllib.request.build_opener(handler).open(request, timeout=timeout)
