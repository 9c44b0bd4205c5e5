"""The HTTP/1.1 client of the http output and the vendor mirrors: POSTs on kept-alive connections.

Why not aiohttp's client: the sidecar's delivery process runs the three mirrors, and
aiohttp with three sessions held 12–15 MB there, for one method to a handful of hosts.
h11 (already the monitor's server, agent/monitor/http.py) parses and frames; this module
moves bytes between it and an asyncio stream and keeps a few connections per host.

What it does, as the outputs need it (agent/outputs/posting.py says why the first two):
* never follows a redirect: a 3xx is an :class:`Answer` like any other;
* reads at most ``MAX_ANSWER_BYTES`` of a body; with more to come the connection is
  closed, not drained;
* each request, connect included, is bounded by ``timeout`` (``TimeoutError``);
* at most ``limit`` requests at once; an idle connection is kept ``KEEPALIVE_SECONDS``,
  and one the server has closed meanwhile is never used;
* a connection refused or reset, a TLS failure or an answer that is not HTTP raises
  :class:`HttpError`: the destination's doing, never the records' (a retry, not a split).
"""

from __future__ import annotations

import asyncio
import ssl
import time
import urllib.parse
from dataclasses import dataclass, field

import h11

from agent.errors import HttpError
from agent.outputs.posting import MAX_ANSWER_BYTES, Answer, origin

KEEPALIVE_SECONDS = 15.0  # as aiohttp's connector: servers commonly close idle ones after 30-75 s
MAX_HEAD_BYTES = 64 * 1024  # an answer's status line and headers
READ_SIZE = 16 * 1024
# What a destination that gave no complete answer raises here: refused, reset, TLS, not HTTP.
_NO_ANSWER = (OSError, h11.ProtocolError, asyncio.IncompleteReadError, asyncio.LimitOverrunError)


@dataclass(slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    h11: h11.Connection = field(default_factory=lambda: h11.Connection(h11.CLIENT, MAX_HEAD_BYTES))
    idle_since: float = 0.0

    def usable(self, now: float) -> bool:
        return (
            not self.reader.at_eof()
            and not self.writer.is_closing()
            and now - self.idle_since < KEEPALIVE_SECONDS
            and self.h11.our_state is h11.IDLE
        )

    def close(self) -> None:
        self.writer.close()


@dataclass(frozen=True, slots=True)
class _Target:
    scheme: str
    host: str
    port: int
    path: str  # with its query

    @property
    def authority(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def _target(url: str) -> _Target:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HttpError(f"not an http(s) URL: {origin(url) or '(no host)'}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise HttpError(f"bad port in {origin(url) or 'the URL'}") from None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return _Target(parts.scheme, parts.hostname, port, path)


class HttpClient:
    """Kept-alive connections to the hosts one output posts to, at most ``limit`` requests at once."""

    def __init__(self, *, timeout: float, limit: int = 100):
        self.timeout = timeout
        self._slots = asyncio.Semaphore(limit)
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._tls: ssl.SSLContext | None = None

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        target = _target(url)
        async with self._slots:
            conn = self._take(target)
            try:
                async with asyncio.timeout(self.timeout):
                    if conn is None:
                        conn = await self._connect(target)
                    answer, reusable = await self._exchange(conn, target, body, headers)
            except BaseException as exc:  # the connection is mid-exchange: never used again
                if conn is not None:
                    conn.close()
                # A timeout is an OSError too, but the outputs say it as one; a cancel is no failure.
                if isinstance(exc, _NO_ANSWER) and not isinstance(exc, TimeoutError):
                    raise HttpError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None
                raise
            if reusable:
                conn.h11.start_next_cycle()
                conn.idle_since = time.monotonic()
                self._idle.setdefault((target.scheme, target.host, target.port), []).append(conn)
            else:
                conn.close()
            return answer

    def _take(self, target: _Target) -> _Connection | None:
        idle = self._idle.get((target.scheme, target.host, target.port))
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.usable(now):
                return conn
            conn.close()
        return None

    async def _connect(self, target: _Target) -> _Connection:
        tls: ssl.SSLContext | None = None
        if target.scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()  # verified against the system's CAs
            tls = self._tls
        reader, writer = await asyncio.open_connection(
            target.host, target.port, ssl=tls, server_hostname=target.host if tls else None
        )
        return _Connection(reader, writer)

    async def _exchange(
        self, conn: _Connection, target: _Target, body: bytes, headers: dict[str, str]
    ) -> tuple[Answer, bool]:
        """One request and its answer; and whether the connection may carry the next."""
        head = [("Host", target.authority), ("Content-Length", str(len(body))), ("User-Agent", "hive-agent")]
        head += [(k, v) for k, v in headers.items() if k.lower() not in ("host", "content-length")]
        c = conn.h11
        conn.writer.write(c.send(h11.Request(method="POST", target=target.path, headers=head)))
        conn.writer.write(c.send(h11.Data(data=body)))
        conn.writer.write(c.send(h11.EndOfMessage()))
        await conn.writer.drain()

        response = await self._next(conn)
        while isinstance(response, h11.InformationalResponse):  # 100 Continue and the like
            response = await self._next(conn)
        if not isinstance(response, h11.Response):
            raise h11.RemoteProtocolError(f"expected an answer, got {type(response).__name__}")
        location = next((v.decode("latin-1") for k, v in response.headers if k == b"location"), "")
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await self._next(conn)
            if isinstance(event, h11.Data):
                keep = event.data[: MAX_ANSWER_BYTES - size]
                chunks.append(keep)
                size += len(keep)
                if size >= MAX_ANSWER_BYTES:
                    reusable = False  # as much as we read, and maybe more: closed, not drained
                    break
            elif isinstance(event, h11.EndOfMessage):
                reusable = c.our_state is h11.DONE and c.their_state is h11.DONE
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise h11.RemoteProtocolError("closed before the end of the answer")
        answer = Answer(response.status_code, b"".join(chunks), origin(location))
        return answer, reusable

    async def _next(self, conn: _Connection) -> object:
        c = conn.h11
        while True:
            event = c.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await conn.reader.read(READ_SIZE)
            c.receive_data(data)  # b"" tells it the peer closed

    def close_idle(self) -> int:
        """Close every kept connection (once a burst is over: its buffers go with it); how many."""
        closed = 0
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
                closed += 1
        self._idle.clear()
        return closed

    async def close(self) -> None:
        self.close_idle()
