"""The client's HTTP/1.1 response parsing (chunked transfer coding, server-sent events) however the
bytes are cut: by the server into chunks and by the network into reads. Property-tested against the
answer the events carry; the real servers are in tests/integration/test_client*.py."""

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from harness.client import _Answer, _Connection, _Exchange

EVENTS = [b'{"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}']
EVENTS += [b'{"model":"m","choices":[{"index":0,"delta":{"content":"w%d "}}]}' % i for i in range(12)]
EVENTS += [b'{"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"length"}]}',
           b'{"model":"m","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":12}}', b"[DONE]"]
TEXT = "".join(f"w{i} " for i in range(12))


def sse(crlf: bool, comments: bool) -> bytes:
    nl = b"\r\n" if crlf else b"\n"
    out = b""
    for n, event in enumerate(EVENTS):
        if comments and n % 4 == 0:
            out += b": keep-alive" + nl + nl
        out += b"data: " + event + nl + nl
    return out


def chunked(body: bytes, cuts: list[int], extension: bool) -> bytes:
    points = sorted({c % len(body) for c in cuts} | {0, len(body)})
    out = b""
    for a, b in zip(points, points[1:], strict=False):
        out += b"%x%s\r\n%s\r\n" % (b - a, b";x=1" if extension else b"", body[a:b])
    return out + b"0\r\n\r\n"


def parse(wire: bytes, reads: list[int]):
    loop = asyncio.new_event_loop()
    try:
        done = loop.create_future()
        answer = _Answer()
        exchange = _Exchange(_Connection(), answer, done, 30.0)
        points = sorted({r % len(wire) for r in reads} | {0, len(wire)})
        for n, (a, b) in enumerate(zip(points, points[1:], strict=False)):
            exchange.feed(wire[a:b], n)
        return exchange, done, answer
    finally:
        loop.close()


@settings(max_examples=150, deadline=None)
@given(cuts=st.lists(st.integers(0, 10_000), max_size=12), reads=st.lists(st.integers(0, 10_000), max_size=20),
       crlf=st.booleans(), comments=st.booleans(), extension=st.booleans())
def test_any_chunking_and_any_reads_give_the_same_answer(cuts, reads, crlf, comments, extension):
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    exchange, done, answer = parse(head + chunked(sse(crlf, comments), cuts, extension), reads)
    assert done.done() and done.exception() is None and exchange.complete
    assert "".join(answer.parts) == TEXT and len(answer.times) == 12 and answer.done
    assert answer.finish == "length" and answer.usage == {"prompt_tokens": 5, "completion_tokens": 12}
    assert answer.times == sorted(answer.times)  # each stamped with the read it came in


@settings(max_examples=50, deadline=None)
@given(reads=st.lists(st.integers(0, 10_000), max_size=20))
def test_a_content_length_body_cut_anywhere(reads):
    body = sse(False, False)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    _, done, answer = parse(head + body, reads)
    assert done.done() and "".join(answer.parts) == TEXT


def test_bad_chunk_sizes_and_framing_fail_the_request():
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    for wire in (head + b"zz\r\n", head + b"-5\r\nabc\r\n", head + b"3\r\nabcXX\r\n"):
        _, done, _ = parse(wire, [])
        assert done.done() and "chunk" in str(done.exception()), wire


def test_every_single_split_point():
    """A response in two reads, cut at every byte: chunk size lines, chunk data, the CRLF after the data,
    SSE blank lines and CRLF pairs are each split somewhere."""
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    wire = head + chunked(sse(True, True), [50, 51, 200, 333, 334, 335], False)
    for k in range(1, len(wire)):
        _, done, answer = parse(wire, [k])
        assert done.done() and done.exception() is None, k
        assert "".join(answer.parts) == TEXT and answer.done, k
