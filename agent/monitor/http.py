"""A small HTTP/1.1 server for the monitor: GET routes answered whole or streamed.

Why not aiohttp's server: the monitor runs in every sidecar, and importing aiohttp
holds about 9 MB in the main process for six GET routes. h11 (the sans-IO HTTP/1.1
state machine uvicorn builds on) parses and frames; this module only moves bytes
between it and an asyncio stream, as uvicorn's h11 protocol does.

Bounds, because a scraper is a peer like any other: a request head of at most
``MAX_HEAD_BYTES``; at most ``REQUEST_TIMEOUT`` to send a whole request once it has
begun, ``KEEPALIVE_TIMEOUT`` between requests; at most ``MAX_CONNECTIONS`` open at
once (one more is closed at accept); a request body is read and dropped, up to
``MAX_BODY_BYTES``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import h11

log = logging.getLogger("agent.monitor")

MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024
REQUEST_TIMEOUT = 10.0
KEEPALIVE_TIMEOUT = 60.0
MAX_CONNECTIONS = 64
MAX_UNIX_PATH = 107  # sun_path holds 108 bytes with the terminating NUL
READ_SIZE = MAX_HEAD_BYTES  # so that a head past the bound is refused at the read that passes it


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    remote: str | None
    _reader: asyncio.StreamReader
    _writer: asyncio.StreamWriter

    def gone(self) -> bool:
        """Has the client closed its side? (A streaming response polls this while idle.)"""
        return self._reader.at_eof() or self._writer.is_closing()


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class Stream:
    """A response sent as it is made (chunked), until ``chunks`` ends or the client goes."""

    chunks: AsyncIterator[bytes]
    content_type: str = "application/octet-stream"


def text(status: int, body: str) -> Response:
    return Response(status, body.encode())


def json_body(body: bytes, status: int = 200) -> Response:
    return Response(status, body, "application/json; charset=utf-8")


Handler = Callable[[Request], Awaitable[Response | Stream]]


class HttpServer:
    def __init__(self, routes: dict[str, Handler], posts: dict[str, Handler] | None = None):
        """``routes`` answer GET (and HEAD); ``posts`` answer POST."""
        self.routes = routes
        self.posts = posts or {}
        self.server: asyncio.Server | None = None
        self.port = 0
        self._connections: set[asyncio.Task] = set()

    async def start(self, bind: str, port: int) -> None:
        self.server = await asyncio.start_server(self._accepted, bind, port, limit=READ_SIZE)
        self.port = self.server.sockets[0].getsockname()[1]

    async def start_unix(self, path: Path) -> None:
        """Listen on a unix socket only the agent's user may connect to (0600 in a 0700 directory).

        A stale socket of an earlier run is replaced; anything else at ``path`` is left alone."""
        if len(os.fsencode(path)) > MAX_UNIX_PATH:
            raise OSError(errno.ENAMETOOLONG, f"socket path longer than {MAX_UNIX_PATH} bytes", str(path))
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)
        except FileNotFoundError:
            pass
        self.server = await asyncio.start_unix_server(self._accepted, path, limit=READ_SIZE)
        os.chmod(path, 0o600)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._connections) >= MAX_CONNECTIONS:
            writer.close()
            return
        assert task is not None
        self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, TimeoutError, h11.ProtocolError):
            pass  # the client went, stalled or spoke something else: nothing to answer
        except asyncio.CancelledError:
            pass
        finally:
            self._connections.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        peer = writer.get_extra_info("peername")
        remote = peer[0] if isinstance(peer, tuple) else None
        while True:
            try:
                event = await _next_event(conn, reader, KEEPALIVE_TIMEOUT)
                if isinstance(event, h11.ConnectionClosed):
                    return
                assert isinstance(event, h11.Request)
                body = 0
                while not isinstance(more := await _next_event(conn, reader, REQUEST_TIMEOUT), h11.EndOfMessage):
                    if isinstance(more, h11.Data):
                        body += len(more.data)
                        if body > MAX_BODY_BYTES:
                            raise h11.RemoteProtocolError("request body too large", error_status_hint=413)
                    elif isinstance(more, h11.ConnectionClosed):
                        return
            except h11.RemoteProtocolError as exc:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await _send(conn, writer, text(exc.error_status_hint, "bad request\n"), close=True)
                return
            target = event.target.decode("latin-1")
            path, _, query = target.partition("?")
            request = Request(
                method=event.method.decode("latin-1"),
                path=path,
                query=dict(urllib.parse.parse_qsl(query)),
                remote=remote,
                _reader=reader,
                _writer=writer,
            )
            response = await self._answer(request)
            if isinstance(response, Stream):
                await _stream(conn, writer, request, response)
                return  # a stream ends the connection
            await _send(conn, writer, response, close=False)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()

    async def _answer(self, request: Request) -> Response | Stream:
        posted = self.posts.get(request.path)
        if posted is not None:
            if request.method != "POST":
                return Response(405, b"only POST\n", headers=[("Allow", "POST")])
            handler = posted
        else:
            got = self.routes.get(request.path)
            if got is None:
                return text(404, "not found\n")
            if request.method != "GET":
                return Response(405, b"only GET\n", headers=[("Allow", "GET")])
            handler = got
        try:
            return await handler(request)
        except Exception:
            log.exception("monitor: %s failed", request.path)
            return text(500, "internal error\n")


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader, timeout: float) -> object:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        data = await asyncio.wait_for(reader.read(READ_SIZE), timeout)
        conn.receive_data(data)  # b"" says the client closed


def _head(content_type: str, extra: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [("Content-Type", content_type), ("X-Content-Type-Options", "nosniff"), *extra]


async def _send(conn: h11.Connection, writer: asyncio.StreamWriter, response: Response, close: bool) -> None:
    headers = _head(response.content_type, response.headers)
    headers.append(("Content-Length", str(len(response.body))))
    if close:
        headers.append(("Connection", "close"))
    out = conn.send(h11.Response(status_code=response.status, headers=headers))
    out += conn.send(h11.Data(data=response.body)) or b""
    out += conn.send(h11.EndOfMessage()) or b""
    writer.write(out)
    await writer.drain()


async def _stream(conn: h11.Connection, writer: asyncio.StreamWriter, request: Request, response: Stream) -> None:
    headers = _head(response.content_type, [("Connection", "close")])
    writer.write(conn.send(h11.Response(status_code=200, headers=headers)) or b"")
    try:
        await writer.drain()
        async for chunk in response.chunks:
            if request.gone():
                break
            if chunk:
                writer.write(conn.send(h11.Data(data=chunk)) or b"")
                await writer.drain()
        else:
            writer.write(conn.send(h11.EndOfMessage()) or b"")
            await writer.drain()
    finally:
        aclose = getattr(response.chunks, "aclose", None)
        if aclose is not None:
            await aclose()
