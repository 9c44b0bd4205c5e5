"""The HTTP client of the http output and the mirrors (agent/outputs/http_client.py), against a
real aiohttp server on 127.0.0.1: connections kept and reused, never one the server closed,
TLS verified, and every failure a destination can cause raised as HttpError or TimeoutError."""

from __future__ import annotations

import asyncio
import socket
import ssl

import pytest
import trustme
from aiohttp import web

from agent.errors import HttpError
from agent.outputs.http_client import HttpClient


class Server:
    """Counts the connections it accepts and the requests it answers, and keeps what they sent."""

    def __init__(self):
        self.connections: set[int] = set()
        self.requests: list[tuple[str, dict, bytes]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.delay = 0.0
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.connections.add(id(request.transport))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            body = await request.read()
            self.requests.append((request.path_qs, dict(request.headers), body))
            await asyncio.sleep(self.delay)
            if request.path == "/close":
                return web.Response(text="bye", headers={"Connection": "close"})
            return web.Response(status=202, text="accepted")
        finally:
            self.in_flight -= 1

    async def start(self, ssl_context=None, keepalive_timeout: float = 75.0) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None, keepalive_timeout=keepalive_timeout)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        scheme = "https" if ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def server():
    s = Server()
    s.url = await s.start()
    yield s
    await s.stop()


async def test_requests_in_turn_share_one_kept_alive_connection(server):
    client = HttpClient(timeout=5)
    try:
        answers = [await client.post(server.url + f"/v1/x?n={i}", b'{"n":%d}' % i, {"X-Token": "t"}) for i in range(5)]
    finally:
        await client.close()
    assert [a.status for a in answers] == [202] * 5
    assert answers[0].body == b"accepted"
    assert len(server.connections) == 1
    path, headers, body = server.requests[3]
    assert (path, body, headers["X-Token"], headers["Content-Length"]) == ("/v1/x?n=3", b'{"n":3}', "t", "7")
    assert headers["Host"] == server.url.removeprefix("http://")


async def test_a_connection_the_server_closed_is_never_used_again(server):
    client = HttpClient(timeout=5)
    try:
        assert (await client.post(server.url + "/close", b"", {})).status == 200
        assert (await client.post(server.url + "/next", b"", {})).status == 202
    finally:
        await client.close()
    assert len(server.connections) == 2


async def test_an_idle_connection_the_server_dropped_is_not_taken(server):
    await server.stop()
    s = Server()
    url = await s.start(keepalive_timeout=0.2)  # the server drops idle connections after 0.2 s
    client = HttpClient(timeout=5)
    try:
        assert (await client.post(url + "/a", b"", {})).status == 202
        await asyncio.sleep(0.5)
        assert (await client.post(url + "/b", b"", {})).status == 202
    finally:
        await client.close()
        await s.stop()
    assert len(s.requests) == 2 and len(s.connections) == 2


async def test_at_most_limit_requests_at_once(server):
    server.delay = 0.05
    client = HttpClient(timeout=5, limit=3)
    try:
        answers = await asyncio.gather(*(client.post(server.url + "/p", b"x", {}) for _ in range(12)))
    finally:
        await client.close()
    assert [a.status for a in answers] == [202] * 12
    assert server.max_in_flight == 3
    assert len(server.connections) == 3


async def test_a_slow_destination_times_out_and_its_connection_is_dropped(server):
    server.delay = 2
    client = HttpClient(timeout=0.3)
    try:
        with pytest.raises(TimeoutError):
            await client.post(server.url + "/slow", b"x", {})
        server.delay = 0
        assert (await client.post(server.url + "/fast", b"x", {})).status == 202
    finally:
        await client.close()
    assert len(server.connections) == 2


async def test_refused_and_not_http_are_http_errors():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: refused
        client = HttpClient(timeout=5)
        with pytest.raises(HttpError):
            await client.post(f"http://127.0.0.1:{port}/", b"", {})

    async def garbage(reader, writer):
        await reader.read(1000)
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        with pytest.raises(HttpError):
            await client.post(f"http://127.0.0.1:{port}/", b"", {})
    finally:
        srv.close()
        await client.close()


async def test_https_is_verified_against_the_system_cas_or_ssl_cert_file(tmp_path, monkeypatch):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    s = Server()
    url = await s.start(ssl_context=server_ctx)
    try:
        client = HttpClient(timeout=5)
        with pytest.raises(HttpError):  # a CA the system does not know: refused
            await client.post(url + "/v1", b"x", {})
        assert s.requests == []
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
        client = HttpClient(timeout=5)
        assert (await client.post(url + "/v1", b"x", {})).status == 202
        await client.close()
    finally:
        await s.stop()
    assert [r[0] for r in s.requests] == ["/v1"]


async def test_closing_the_idle_connections_leaves_the_client_usable(server):
    client = HttpClient(timeout=5, limit=4)
    try:
        await asyncio.gather(*(client.post(server.url + "/p", b"x", {}) for _ in range(4)))
        assert client.close_idle() == 4
        assert client.close_idle() == 0
        assert (await client.post(server.url + "/again", b"x", {})).status == 202
    finally:
        await client.close()
    assert len(server.connections) == 5
