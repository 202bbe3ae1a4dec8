"""A tiny HTTP proxy for tests, run as its own process on loopback:

    python -m tests.proxy_server [--tls-cert CERT --tls-key KEY --tls-upstream PORT]

It prints `listening on PORT` (and `tls on PORT` with a TLS front), then one line per request it
relays: `FORWARD <request line>` for absolute-form requests (rewritten to origin form for the
server), `CONNECT <authority>` for tunnels, with ` auth=<Proxy-Authorization>` when one was sent.
Every host name resolves to 127.0.0.1 here, so a name no DNS knows (`*.invalid`) reaches the local
servers only through this proxy: a request that arrives proves the client used it. The TLS front
terminates TLS with the given certificate and relays the bytes to 127.0.0.1:--tls-upstream (an https
server for the client to tunnel to)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ssl
import sys
from urllib.parse import urlsplit


def log(line: str) -> None:
    print(line, flush=True)


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(Exception):
        writer.close()


async def read_head(reader: asyncio.StreamReader) -> tuple[str, list[str]] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")[:-2]
    return lines[0], lines[1:]


def header(headers: list[str], name: str) -> str | None:
    for line in headers:
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            return value.strip()
    return None


async def forward_requests(first: tuple[str, list[str]], reader, upstream_writer) -> None:
    """Absolute-form requests, one after another on a keep-alive connection, each rewritten to origin form."""
    request: tuple[str, list[str]] | None = first
    while request is not None:
        line, headers = request
        method, target, version = line.split(" ", 2)
        auth = header(headers, "proxy-authorization")
        log(f"FORWARD {line}" + (f" auth={auth}" if auth else ""))
        parts = urlsplit(target)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        kept = [h for h in headers if not h.lower().startswith(("proxy-authorization:", "proxy-connection:"))]
        upstream_writer.write(("\r\n".join([f"{method} {path} {version}", *kept]) + "\r\n\r\n").encode("latin-1"))
        length = int(header(headers, "content-length") or 0)
        if length:
            upstream_writer.write(await reader.readexactly(length))
        await upstream_writer.drain()
        request = await read_head(reader)
    upstream_writer.close()


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    first = await read_head(reader)
    if first is None:
        writer.close()
        return
    line, headers = first
    method, target, _ = line.split(" ", 2)
    auth = header(headers, "proxy-authorization")
    if method == "CONNECT":
        log(f"CONNECT {target}" + (f" auth={auth}" if auth else ""))
        port = int(target.rsplit(":", 1)[1])
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        return
    port = urlsplit(target).port or 80
    up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
    await asyncio.gather(forward_requests(first, reader, up_writer), pipe(up_reader, writer))


async def tls_front(upstream_port: int, reader, writer) -> None:
    up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def main(args) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    log(f"listening on {server.sockets[0].getsockname()[1]}")
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        front = await asyncio.start_server(lambda r, w: tls_front(args.tls_upstream, r, w), "127.0.0.1", 0,
                                           ssl=context)
        log(f"tls on {front.sockets[0].getsockname()[1]}")
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--tls-upstream", type=int)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args(sys.argv[1:])))
