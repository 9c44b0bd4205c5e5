"""The monitor's HTTP/1.1 server: what a scraper sees, and the bounds a hostile peer meets."""

from __future__ import annotations

import asyncio

import pytest

from agent.monitor import http as httpserver
from agent.monitor.http import HttpServer, Request, Response, Stream


async def _hello(request: Request) -> Response:
    return Response(200, f"hello {request.query.get('who', 'you')}".encode())


async def _counting(request: Request) -> Stream:
    async def chunks():
        for i in range(3):
            yield f"{i}\n".encode()

    return Stream(chunks(), "application/x-ndjson")


async def _boom(request: Request) -> Response:
    raise RuntimeError("a handler bug")


@pytest.fixture
async def server():
    srv = HttpServer({"/hello": _hello, "/stream": _counting, "/boom": _boom})
    await srv.start("127.0.0.1", 0)
    yield srv
    await srv.stop()


async def _exchange(port: int, raw: bytes, read_until_close: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5) if read_until_close else await reader.read(65536)
    writer.close()
    await writer.wait_closed()
    return data


async def test_two_requests_on_one_kept_alive_connection_are_both_answered(server):
    raw = b"GET /hello?who=a HTTP/1.1\r\nHost: x\r\n\r\n"
    raw += b"GET /hello?who=b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    data = await _exchange(server.port, raw)
    assert data.count(b"HTTP/1.1 200") == 2
    assert b"hello a" in data and b"hello b" in data


async def test_unknown_paths_other_methods_and_handler_bugs_get_their_status(server):
    assert (await _exchange(server.port, b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")).startswith(
        b"HTTP/1.1 404"
    )
    post = b"POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
    assert (await _exchange(server.port, post)).startswith(b"HTTP/1.1 405")
    assert (await _exchange(server.port, b"GET /boom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")).startswith(
        b"HTTP/1.1 500"
    )
    # ... and the server still answers
    assert b"hello you" in await _exchange(server.port, b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")


async def test_a_stream_is_sent_chunked_to_its_end(server):
    data = await _exchange(server.port, b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert body == b"2\r\n0\n\r\n2\r\n1\n\r\n2\r\n2\n\r\n0\r\n\r\n"


async def test_a_head_past_the_bound_is_refused_and_garbage_closes_the_connection(server):
    big = b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (2 * httpserver.MAX_HEAD_BYTES) + b"\r\n\r\n"
    try:
        answer = await _exchange(server.port, big)
    except ConnectionResetError:  # closed with our bytes unread: refused all the same
        answer = b"HTTP/1.1 431 (reset)"
    assert answer.startswith(b"HTTP/1.1 431")
    assert (await _exchange(server.port, b"\x16\x03\x01garbage\r\n\r\n")).startswith(b"HTTP/1.1 400")


async def test_a_stalled_request_is_dropped_after_the_request_timeout(server, monkeypatch):
    monkeypatch.setattr(httpserver, "KEEPALIVE_TIMEOUT", 0.3)
    monkeypatch.setattr(httpserver, "REQUEST_TIMEOUT", 0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /hello HTTP/1.1\r\n")  # and never the rest
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
    writer.close()
    await writer.wait_closed()


async def test_connections_past_the_limit_are_closed_at_accept_and_others_served_once_they_go(server, monkeypatch):
    monkeypatch.setattr(httpserver, "MAX_CONNECTIONS", 4)
    held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(4)]
    await asyncio.sleep(0.1)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    await writer.wait_closed()
    for _, w in held:
        w.close()
        await w.wait_closed()
    await asyncio.sleep(0.1)
    assert b"hello you" in await _exchange(server.port, b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
