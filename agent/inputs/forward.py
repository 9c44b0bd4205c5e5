"""``type = "forward"``: the Forward protocol server (TCP, TLS, unix socket, UDP heartbeat).

The codec (agent/protocol/forward.py) turns bytes into frames; this module
owns the sockets. Per connection:

* frames go through the ingest step (agent/ingest.py: filters, journal,
  dead letters) in arrival order; ``{"ack": chunk}`` is written only once
  the ingest step says the batch is durable, in the same order;
* a protocol error logs one line naming the peer and the reason and closes
  that connection only; acks already written stay valid, frames not yet
  durable are never acked (the client resends them);
* backpressure: while the journal is full, or too many frames of this
  connection wait for the journal, the connection stops reading. Nothing is
  dropped, nothing is acked early.
* with ``shared_key`` the server sends HELO on connect and accepts nothing
  but a valid PING before PONG; a failed PING gets
  ``["PONG", false, reason, "", ""]`` and the connection is closed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import ipaddress
import logging
import os
import re
import resource
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import msgpack
from pydantic import Field, model_validator

from agent import tasks
from agent.component import Input, Reading
from agent.config.types import (
    Duration,
    InputConfigBase,
    Interval,
    Secret,
    Size,
    Strict,
    check_readable,
    check_tls_pair,
)
from agent.errors import JournalClosed, ProtocolError
from agent.ingest import Ingest, when_all
from agent.log import Summary, peer_text
from agent.protocol import forward as fwd

log = logging.getLogger("agent.input.forward")

# ["PING", hostname, salt, digest, username, password]: a fixarray of 6, "PING" as a fixstr (or a str8)
PING_PREFIXES = (b"\x96\xa4PING", b"\x96\xd9\x04PING")
PREAUTH_LIMIT = 64 * 1024  # a PING is a few hundred bytes
# Costly frames are parsed one at a time, off the event loop: each may inflate to
# max_decompressed_size, so a thread each would multiply that by the pool's size.
_COSTLY_PARSER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="forward-parse")

UDP_HEARTBEAT_MAX = 128
AUTH_PENALTY = 0.5  # seconds a host waits after its first failed authentication
MAX_AUTH_PENALTY = 30.0
MAX_THROTTLED_HOSTS = 10_000
RESOLVE_TIMEOUT = 2.0  # seconds a peer's reverse DNS may take (source_hostname_key) before its IP is used
ACCEPT_RETRY_DELAY = 0.1  # seconds between accepts while the process is out of descriptors
FD_RESERVE = 128  # descriptors kept for the journal, the monitor, the delivery process and the tail
SWEEP_INTERVAL = 1.0  # seconds between checks of frame and idle deadlines


class User(Strict):
    username: str
    password: Secret


class ForwardInputConfig(InputConfigBase):
    """Fluentd's in_forward: TCP (and TLS), a unix socket, the UDP heartbeat."""

    type: Literal["forward"]
    bind: str = "0.0.0.0"
    port: int = Field(24224, ge=0, le=65535)
    unix_path: Path | None = None
    udp_heartbeat: bool = True
    shared_key: Secret | None = None
    self_hostname: str = Field(default_factory=socket.gethostname)
    users: list[User] = []
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None  # when set, clients must present a certificate signed by it
    max_frame_size: Annotated[Size, Field(ge=1024)] = 16 * 1024 * 1024
    max_decompressed_size: Annotated[Size, Field(ge=1024)] = 64 * 1024 * 1024
    source_address_key: str | None = None
    source_hostname_key: str | None = None
    max_inflight_frames: int = Field(8, ge=1)
    # With shared_key: a connection that has not authenticated by then is closed.
    handshake_timeout: Interval = 10.0
    # With TLS: a connection whose TLS handshake has not completed by then is closed (asyncio's
    # default is 60 s, long enough for stalled ClientHellos to take every descriptor).
    tls_handshake_timeout: Interval = 5.0
    # Bounds on what peers can hold: connections at once (also kept under the open-file limit),
    # the time a started frame has to complete (a 1 byte/s sender), the time a connection may stay
    # silent (0: for ever, as Fluentd), and the bytes of incomplete frames across all connections.
    max_connections: int = Field(4096, ge=1)
    frame_timeout: Interval = 60.0
    idle_timeout: Duration = 3600.0
    max_buffered_bytes: Annotated[Size, Field(ge=1024)] = 256 * 1024 * 1024

    @model_validator(mode="after")
    def _tls_and_users(self) -> ForwardInputConfig:
        check_tls_pair(self.tls_cert, self.tls_key)
        if self.tls_ca is not None and self.tls_cert is None:
            raise ValueError("tls_ca needs tls_cert and tls_key")
        if self.users and self.shared_key is None:
            raise ValueError("users need shared_key (the handshake carries them)")
        check_readable(tls_cert=self.tls_cert, tls_key=self.tls_key, tls_ca=self.tls_ca)
        return self

    def listens_on(self) -> tuple[str, int] | None:
        return (self.bind, self.port) if self.port else None

    def describe(self) -> str:
        extra = [w for w, on in (("shared_key", self.shared_key), ("tls", self.tls_cert)) if on]
        if self.unix_path:
            extra.append(f"unix {self.unix_path}")
        return f"forward {self.bind}:{self.port}" + (f" ({', '.join(extra)})" if extra else "")


@dataclass(slots=True)
class ForwardStats:
    connections: int = 0
    refused_connections: int = 0
    frames: int = 0
    records: int = 0
    bytes: int = 0
    skipped_records: int = 0  # invalid entries
    discarded_records: int = 0  # entries of a fluent_signal other than logs
    protocol_errors: int = 0
    auth_failures: int = 0
    tls_failures: int = 0  # handshakes that failed or did not complete in time
    acks: int = 0
    heartbeats: int = 0


class ForwardInput(Input):
    def __init__(self, cfg: ForwardInputConfig, ingest: Ingest):
        self.cfg = cfg
        self.name = cfg.name
        self.ingest = ingest
        self.shared_key = cfg.shared_key.get_secret_value().encode() if cfg.shared_key else None
        self.users = {u.username.encode(): u.password.get_secret_value().encode() for u in cfg.users}
        self.self_hostname = cfg.self_hostname.encode()
        self.connections: set[ForwardConnection] = set()
        self.servers: list[asyncio.AbstractServer] = []
        self.udp_transport: asyncio.DatagramTransport | None = None
        self.listening: list[str] = []
        self.failures = Summary(60.0)  # one line per peer and kind of failure a minute
        self.max_connections = _connection_limit(cfg.max_connections)
        self.buffered_total = 0  # bytes of incomplete frames across the connections
        self.tls: ssl.SSLContext | None = None
        self.auth_throttle = AuthThrottle()
        self.handshaking = 0  # accepted TLS connections whose handshake is under way
        self._tls_listeners: list[socket.socket] = []
        self._tls_tasks: set[asyncio.Task] = set()
        self._sweeper: asyncio.Task | None = None
        self.stats = ForwardStats()
        ingest.on_room(self._resume_all)

    def received(self) -> tuple[int, int]:
        return self.stats.records, self.stats.bytes

    def open_now(self) -> str:
        return f"{len(self.connections)} connections"

    def readings(self) -> Iterable[Reading]:
        st = self.stats
        return (
            Reading("discarded", st.skipped_records, ("invalid_entry",)),
            Reading("discarded", st.discarded_records, ("not_logs",)),
            Reading("errors", st.protocol_errors, ("protocol",)),
            Reading("errors", st.auth_failures, ("auth",)),
            Reading("errors", st.tls_failures, ("tls",)),
            Reading("forward_auth_failures", st.auth_failures),
        )

    # -- lifecycle -------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ssl_ctx = self.tls = self._ssl_context()
        cfg = self.cfg
        if ssl_ctx is None:
            server = await loop.create_server(
                lambda: ForwardConnection(self), cfg.bind, cfg.port, reuse_address=True, backlog=1024
            )
            self.servers.append(server)
            port = server.sockets[0].getsockname()[1]
        else:
            port = self._listen_tls(socket_for(cfg.bind, cfg.port))
        scheme = "tls" if ssl_ctx else "tcp"
        self.listening.append(f"{scheme} {_hostport(cfg.bind, port)}")
        if cfg.udp_heartbeat:
            self.udp_transport, _ = await loop.create_datagram_endpoint(
                lambda: _HeartbeatProtocol(self), local_addr=(cfg.bind, port)
            )
            self.listening.append(f"udp {_hostport(cfg.bind, port)}")
        if cfg.unix_path:
            path = str(cfg.unix_path)
            if os.path.exists(path):
                os.unlink(path)
            if ssl_ctx is None:
                self.servers.append(await loop.create_unix_server(lambda: ForwardConnection(self), path))
            else:
                unix_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                unix_sock.bind(path)
                unix_sock.listen(1024)
                self._listen_tls(unix_sock)
            self.listening.append(f"unix {path}")
        self.port = port
        self._sweeper = tasks.spawn(self._sweep(), f"{self.name}-deadlines", owner=self.name, critical=True)
        if self.max_connections < cfg.max_connections:
            log.warning(
                "input %s: at most %d connections (max_connections %d, but the open-file limit keeps "
                "%d descriptors for the agent itself)",
                self.name,
                self.max_connections,
                cfg.max_connections,
                FD_RESERVE,
            )
        if ssl_ctx is None and cfg.shared_key is None and not _loopback(cfg.bind):
            # Allowed, as in Fluentd, but anyone who can reach the port can write into the journal.
            log.warning(
                "input %s: listening on %s with neither shared_key nor TLS: any host that reaches "
                "this port can send events",
                self.name,
                _hostport(cfg.bind, port),
            )

    # -- TLS: accepted here, so that a connection counts from accept ------------------
    #
    # With ssl= on create_server, asyncio shows a connection to the protocol only once its TLS
    # handshake is done: connections that never send a ClientHello held descriptors uncounted by
    # max_connections for asyncio's 60 s (600 of them shut out every healthy client under a
    # 400-descriptor limit). Here every accepted socket counts until its handshake ends, one over
    # max_connections is closed at accept, and a handshake has tls_handshake_timeout.

    def _listen_tls(self, listener: socket.socket) -> int:
        listener.setblocking(False)
        self._tls_listeners.append(listener)
        task = tasks.spawn(self._accept_tls(listener), f"{self.name}-tls-accept", owner=self.name, critical=True)
        self._tls_tasks.add(task)
        task.add_done_callback(self._tls_tasks.discard)
        address = listener.getsockname()
        return address[1] if isinstance(address, tuple) else 0

    async def _accept_tls(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, address = await loop.sock_accept(listener)
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: the backlog waits, as asyncio's own server does.
                    log.error("input %s: cannot accept: %s", self.name, exc.strerror)
                    await asyncio.sleep(ACCEPT_RETRY_DELAY)
                continue
            if len(self.connections) + self.handshaking >= self.max_connections:
                self.stats.refused_connections += 1
                self._refused(address, f"{self.max_connections} connections already (max_connections)")
                sock.close()
                continue
            self.handshaking += 1
            task = tasks.spawn(self._tls_handshake(sock, address), f"{self.name}-tls-handshake", owner=self.name)
            self._tls_tasks.add(task)
            task.add_done_callback(self._tls_tasks.discard)

    async def _tls_handshake(self, sock: socket.socket, address: Any) -> None:
        timeout = self.cfg.tls_handshake_timeout
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: ForwardConnection(self), sock, ssl=self.tls, ssl_handshake_timeout=timeout
            )
        except asyncio.CancelledError:
            sock.close()
            raise
        except Exception as exc:  # a stall, a reset, bad TLS: this peer's, one line
            self.stats.tls_failures += 1
            # asyncio says a handshake past its deadline with ConnectionAbortedError, uvloop too
            stalled = isinstance(exc, TimeoutError) or (
                isinstance(exc, ConnectionAbortedError) and "longer than" in str(exc)
            )
            self._refused(
                address,
                f"no TLS handshake within tls_handshake_timeout ({timeout:g}s)"
                if stalled
                else f"TLS handshake failed: {type(exc).__name__}: {exc}",
            )
            sock.close()
        finally:
            self.handshaking -= 1

    def _refused(self, address: Any, reason: str) -> None:
        if isinstance(address, tuple) and address:
            self.say_closing(address[0], _hostport(address[0], address[1]), reason)
        else:
            self.say_closing("unix", "unix socket", reason)

    def say_closing(self, host: str, peer: str, reason: str) -> None:
        """One line per peer host and kind of failure a minute, with a count of the ones held back."""
        held = self.failures.should_log((host, re.sub(r"\d+", "N", reason)[:60]))
        if held is not None:
            log.error(
                "input %s: peer %s: closing connection: %s%s",
                self.name,
                peer,
                peer_text(reason, 300),
                f" (and {held} more connections since the last line)" if held else "",
            )

    def _ssl_context(self) -> ssl.SSLContext | None:
        cfg = self.cfg
        if not cfg.tls_cert:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(cfg.tls_cert), str(cfg.tls_key))
        if cfg.tls_ca:
            ctx.load_verify_locations(str(cfg.tls_ca))
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    async def _sweep(self) -> None:
        """Close the connections past a deadline: a frame that does not complete, a long silence."""
        cfg = self.cfg
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = time.monotonic()
            for conn in list(self.connections):
                if conn.closing or (conn.paused and not conn.acks_unread):
                    continue  # held back by us (backpressure): not the peer's delay
                if conn.acks_unread and cfg.idle_timeout and now - conn.last_data > cfg.idle_timeout:
                    conn.abort(f"has not read its acks for idle_timeout ({cfg.idle_timeout:g}s)")
                elif conn.frame_started is not None and now - conn.frame_started > cfg.frame_timeout:
                    conn.abort(f"a frame not complete within frame_timeout ({cfg.frame_timeout:g}s)")
                elif cfg.idle_timeout and not conn.inflight and now - conn.last_data > cfg.idle_timeout:
                    conn.abort(f"idle for idle_timeout ({cfg.idle_timeout:g}s)")

    async def stop(self, timeout: float) -> None:
        """Stop accepting, let connections finish their in-flight frames, then close them."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        for server in self.servers:
            server.close()
        for task in list(self._tls_tasks):
            task.cancel()
        await asyncio.gather(*self._tls_tasks, return_exceptions=True)
        for listener in self._tls_listeners:
            listener.close()
        if self.udp_transport is not None:
            self.udp_transport.close()
        for conn in list(self.connections):
            conn.finish()
        deadline = time.monotonic() + timeout
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            conn.abort("shutdown deadline passed")
        for server in self.servers:
            await server.wait_closed()

    def heaviest(self, crossing: ForwardConnection) -> ForwardConnection:
        """The connection to shed when incomplete frames exceed max_buffered_bytes: the largest
        holder of the peer host holding the most. Not simply the connection that crossed the
        line (a healthy sender's chunk, behind another peer's parked frames), nor the largest
        connection alone (many small parked frames would outweigh one healthy large one)."""
        by_host: dict[str, int] = {}
        holders = [c for c in self.connections if c.buffered]
        if not holders:
            return crossing
        for conn in holders:
            by_host[conn.peer_host] = by_host.get(conn.peer_host, 0) + conn.buffered
        host = max(by_host, key=by_host.__getitem__)
        return max((c for c in holders if c.peer_host == host), key=lambda c: c.buffered)

    def _resume_all(self) -> None:
        for conn in list(self.connections):
            conn.maybe_resume()


class AuthThrottle:
    """After a failed authentication, a host's next PINGs are refused unchecked for a while, that
    while doubling with each failure (0.5 s, 1 s, 2 s, ... at most MAX_AUTH_PENALTY): with no
    delay, one host tried 4,600-5,300 passwords a second. Parallel connections gain nothing, the
    penalty is the host's. A success clears it. At most MAX_THROTTLED_HOSTS are remembered."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._hosts: dict[str, tuple[int, float]] = {}  # host -> (failures in a row, refused until)

    def wait(self, host: str) -> float:
        entry = self._hosts.get(host)
        return 0.0 if entry is None else max(0.0, entry[1] - self.clock())

    def failed(self, host: str) -> None:
        failures = self._hosts.pop(host, (0, 0.0))[0] + 1
        if len(self._hosts) >= MAX_THROTTLED_HOSTS:
            del self._hosts[next(iter(self._hosts))]  # the longest unrenewed
        penalty = min(AUTH_PENALTY * 2 ** min(failures - 1, 16), MAX_AUTH_PENALTY)
        self._hosts[host] = (failures, self.clock() + penalty)

    def passed(self, host: str) -> None:
        self._hosts.pop(host, None)


class ForwardConnection(asyncio.Protocol):
    transport: asyncio.Transport  # from connection_made, asyncio's first call

    def __init__(self, server: ForwardInput):
        self.server = server
        self.cfg = server.cfg
        self.decoder = fwd.ForwardDecoder(
            max_frame_size=self.cfg.max_frame_size, max_decompressed_size=self.cfg.max_decompressed_size
        )
        self.peer = "?"
        self.peer_host = "?"  # repeated failures are summarized per host, whatever the port
        self.inflight: deque[tuple[asyncio.Future, bytes | None]] = deque()
        self.paused = False
        self.closing = False
        self.authenticated = server.shared_key is None
        self.nonce = b""
        self.auth_salt = b""
        self.source_address: str | None = None
        self.source_hostname: str | None = None
        self._resolver: asyncio.Task | None = None
        self._held: list[bytes] | None = None
        self._preauth = bytearray()
        self._handshake_timer: asyncio.TimerHandle | None = None
        self.last_data = time.monotonic()
        self._waiting: deque[bytes] = deque()  # whole frames not yet parsed, in order
        self._parsing: asyncio.Future | None = None  # a costly frame being parsed in a thread
        self._eof = False  # the peer is done sending; what it sent is still handled
        self.frame_started: float | None = None  # when the incomplete frame held now began
        self.buffered = 0  # its bytes
        self.acks_unread = False  # the peer has not taken its acks: reading waits (pause_writing)

    # -- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if len(self.server.connections) >= self.server.max_connections:
            self.peer_host = peer[0] if isinstance(peer, tuple) else "unix"
            self.peer = _hostport(peer[0], peer[1]) if isinstance(peer, tuple) else "unix socket"
            self.server.stats.refused_connections += 1
            self.abort(f"{self.server.max_connections} connections already (max_connections)")
            return
        self.server.connections.add(self)
        self.server.stats.connections += 1
        if isinstance(peer, tuple):
            self.peer = _hostport(peer[0], peer[1])
            self.peer_host = peer[0]
            self.source_address = peer[0]
        else:
            self.peer = "unix socket"
            self.source_address = "unix"
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._speak(peer)

    def _speak(self, peer: Any) -> None:
        """The connection is ready for the forward protocol (after TLS, when TLS is on)."""
        if self.cfg.source_hostname_key and isinstance(peer, tuple):
            # Reverse DNS only when asked, and without blocking the loop: hold
            # the connection's frames until the name is known.
            self.transport.pause_reading()
            self.paused = True
            self._held = []  # bytes that arrive before the name is known wait here
            # Keep a reference: the loop holds tasks only weakly.
            self._resolver = tasks.spawn(self._resolve(peer), f"{self.server.name}-resolve", owner=self.server.name)
        if not self.authenticated:
            self.nonce = os.urandom(16)
            self.auth_salt = os.urandom(16)
            self.transport.write(fwd.helo(self.nonce, self.auth_salt))
            self._preauth = bytearray()
            self._handshake_timer = asyncio.get_running_loop().call_later(
                self.cfg.handshake_timeout, self._handshake_expired
            )

    def _handshake_expired(self) -> None:
        if not self.authenticated:
            self.server.stats.auth_failures += 1
            self.abort(f"no handshake within handshake_timeout ({self.cfg.handshake_timeout:g}s)")

    def _before_handshake(self, data: bytes) -> None:
        """Until the peer has authenticated, the one thing it may send is a small PING: nothing
        else is buffered past PREAUTH_LIMIT, decompressed or scanned."""
        buf = self._preauth
        buf += data
        if not any(prefix.startswith(bytes(buf[: len(prefix)])) for prefix in PING_PREFIXES):
            self.server.stats.protocol_errors += 1
            self.abort("sent something other than PING before the handshake (shared_key is set)")
            return
        if len(buf) > PREAUTH_LIMIT:
            self.server.stats.protocol_errors += 1
            self.abort(f"PING larger than {PREAUTH_LIMIT} bytes")
            return
        framer = msgpack.Unpacker(raw=True, max_buffer_size=PREAUTH_LIMIT * 2)
        framer.feed(bytes(buf))
        try:
            framer.skip()
        except msgpack.OutOfData:
            return  # the rest of the PING is on its way
        except (ValueError, msgpack.UnpackException) as exc:
            self.server.stats.protocol_errors += 1
            self.abort(f"invalid PING: {exc}")
            return
        end = framer.tell()
        ping_bytes, rest = bytes(buf[:end]), bytes(buf[end:])
        self._preauth = bytearray()
        try:
            ping = fwd.parse_frame(ping_bytes, time.time_ns(), PREAUTH_LIMIT)
        except ProtocolError as exc:
            self.server.stats.protocol_errors += 1
            self.abort(exc.reason)
            return
        if not isinstance(ping, fwd.Ping):  # _before_handshake passes on PING bytes only
            self.abort("sent something other than PING before the handshake (shared_key is set)")
            return
        self._handle_ping(ping)
        if self.authenticated:
            if self._handshake_timer is not None:
                self._handshake_timer.cancel()
            if rest:
                self.data_received(rest)

    async def _resolve(self, peer: Any) -> None:
        # Bounded: where reverse DNS does not answer, the connection's frames would wait for ever.
        try:
            host, _ = await asyncio.wait_for(
                asyncio.get_running_loop().getnameinfo(peer[:2], socket.NI_NAMEREQD), RESOLVE_TIMEOUT
            )
            self.source_hostname = host
        except (OSError, TimeoutError):
            self.source_hostname = peer[0]
        held, self._held = self._held, None
        for data in held or ():
            self.data_received(data)
        self.paused = False
        self.maybe_resume()

    def _count_buffered(self, now_buffered: int) -> bool:
        """Track this connection's incomplete frame (its deadline, and the bytes held across all
        connections); True when that closed the connection."""
        server = self.server
        server.buffered_total += now_buffered - self.buffered
        self.buffered = now_buffered
        if not now_buffered:
            self.frame_started = None
            return False
        if self.frame_started is None:
            self.frame_started = self.last_data
        while server.buffered_total > self.cfg.max_buffered_bytes:
            victim = server.heaviest(self)
            held = victim.buffered
            victim.abort(
                f"incomplete frames of all connections hold over max_buffered_bytes "
                f"({self.cfg.max_buffered_bytes} bytes); this peer's hold the most ({held} bytes on this connection)"
            )
            victim.release_buffered()
            if victim is self:
                return True
        return False

    def release_buffered(self) -> None:
        """Give this connection's incomplete frame back to the shared budget (it is being closed)."""
        self.server.buffered_total -= self.buffered
        self.buffered = 0

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server.connections.discard(self)
        self.release_buffered()
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self._held is not None:  # pause_reading may not stop a read already under way
            self._held.append(data)
            return
        self.server.stats.bytes += len(data)
        self.last_data = time.monotonic()
        if not self.authenticated:
            self._before_handshake(data)
            return
        try:
            raw = self.decoder.split(data)
        except ProtocolError as exc:
            self.server.stats.protocol_errors += 1
            self.abort(exc.reason)
            return
        if self._count_buffered(self.decoder.buffered):
            return
        self._waiting.extend(raw)
        self._next_frames()

    def _next_frames(self) -> None:
        """Parse and handle the waiting frames in order. A costly one (compressed, or large) is
        parsed in a thread while this connection reads nothing more, so that one frame never holds
        the event loop, and every other connection, for seconds."""
        while self._waiting and not self.closing and self._parsing is None:
            frame = self._waiting.popleft()
            if fwd.costly(frame):
                self._parsing = asyncio.get_running_loop().run_in_executor(
                    _COSTLY_PARSER, fwd.parse_frame, frame, time.time_ns(), self.cfg.max_decompressed_size
                )
                self._parsing.add_done_callback(self._parsed)
                self.transport.pause_reading()
                return
            try:
                parsed = fwd.parse_frame(frame, time.time_ns(), self.cfg.max_decompressed_size)
            except Exception as exc:  # ProtocolError, or whatever the bytes did: one line
                self._undecodable(exc)
                return
            self._handle(parsed)
        if self.inflight:
            self._check_pressure()
        if self._eof and self._done_after_eof():
            self.transport.close()

    def _parsed(self, future: asyncio.Future) -> None:
        self._parsing = None
        if self.closing or future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            self._undecodable(exc)
            return
        self._handle(future.result())
        if not self.paused and not self.closing and not self._eof:
            self.transport.resume_reading()
        self._next_frames()

    def _undecodable(self, exc: BaseException) -> None:
        self.server.stats.protocol_errors += 1
        self.abort(exc.reason if isinstance(exc, ProtocolError) else f"undecodable bytes: {type(exc).__name__}: {exc}")

    def eof_received(self) -> bool | None:
        if self.decoder.buffered:
            log.warning(
                "input %s: peer %s: connection closed inside a frame (%d bytes dropped, not acked)",
                self.server.name,
                self.peer,
                self.decoder.buffered,
            )
        if self.inflight or self._waiting or self._parsing is not None:
            self._eof = True  # handle what arrived, close once its acks are out
            return True
        return False

    def _done_after_eof(self) -> bool:
        return (self.closing or self._eof) and not self.inflight and not self._waiting and self._parsing is None

    # -- frames ----------------------------------------------------------

    def _handle(self, frame: fwd.Frame) -> None:
        stats = self.server.stats
        if isinstance(frame, fwd.Heartbeat):
            stats.heartbeats += 1
            return
        if isinstance(frame, fwd.Ping):
            self._handle_ping(frame)
            return
        if not self.authenticated:
            self.abort("sent events before the handshake (shared_key is set)")
            return
        stats.frames += 1
        if frame.skipped:
            stats.skipped_records += len(frame.skipped)
            log.warning(
                "input %s: peer %s: tag %s: skipped %d invalid entries: %s%s",
                self.server.name,
                self.peer,
                peer_text(frame.tag),
                len(frame.skipped),
                peer_text(frame.skipped[0], 300),
                f" (+{len(frame.skipped) - 1} more)" if len(frame.skipped) > 1 else "",
            )
        if frame.signal != fwd.SIGNAL_LOGS:
            stats.discarded_records += frame.count
            log.warning(
                "input %s: peer %s: tag %s: discarded %d entries of fluent_signal %d (only logs are kept)",
                self.server.name,
                self.peer,
                peer_text(frame.tag),
                frame.count,
                frame.signal,
            )
            self._ack_now(frame.chunk)
            return
        stats.records += frame.count
        written = []
        for entries, count in frame.records():  # one, or a huge frame's parts: acked once all are durable
            if count and (self.cfg.source_address_key or self.cfg.source_hostname_key):
                entries = self._inject_source(entries)
            try:
                fut = self.server.ingest.submit(frame.tag, entries, count)
            except JournalClosed as exc:
                self.abort(f"not accepted, not acked: {exc}")
                return
            if fut is not None:
                written.append(fut)
        if not written:  # nothing to write (no entries, or the filters kept none)
            self._ack_now(frame.chunk)
            return
        fut = when_all(written)
        self.inflight.append((fut, frame.chunk))
        fut.add_done_callback(self._on_durable)

    def _ack_now(self, chunk: bytes | None) -> None:
        """Ack a frame that needs no write, in order behind the others."""
        if chunk is None:
            return
        if self.inflight:
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            self.inflight.append((done, chunk))
            done.add_done_callback(self._on_durable)
        else:
            self._write_ack(chunk)

    def _on_durable(self, _fut: asyncio.Future) -> None:
        # Acks go strictly in frame order, whichever write finishes first.
        while self.inflight and self.inflight[0][0].done():
            fut, chunk = self.inflight.popleft()
            exc = fut.exception()
            if exc is not None:
                self.abort(f"write failed, not acked: {exc}")
                return
            if chunk is not None:
                self._write_ack(chunk)
        self.maybe_resume()
        if self._done_after_eof():
            self.transport.close()

    def _write_ack(self, chunk: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(fwd.ack_bytes(chunk))
            self.server.stats.acks += 1

    def _handle_ping(self, ping: fwd.Ping) -> None:
        if self.server.shared_key is None or self.authenticated:
            self.abort("unexpected PING (no handshake in progress)")
            return
        wait = self.server.auth_throttle.wait(self.peer_host)
        if wait > 0:  # not checked at all: this host has no guess to make for now
            self.server.stats.auth_failures += 1
            self.transport.write(
                fwd.pong(
                    False, f"too many failed authentications; retry in {wait:.1f}s", self.server.self_hostname, b""
                )
            )
            self.closing = True
            self.transport.close()
            return
        ok, reason, pong = fwd.check_ping(
            ping,
            nonce=self.nonce,
            auth_salt=self.auth_salt,
            shared_key=self.server.shared_key,
            self_hostname=self.server.self_hostname,
            users=self.server.users,
        )
        self.transport.write(pong)
        if ok:
            self.authenticated = True
            self.server.auth_throttle.passed(self.peer_host)
            return
        self.server.auth_throttle.failed(self.peer_host)
        self.server.stats.auth_failures += 1
        held = self.server.failures.should_log((self.peer_host, "auth"))
        if held is not None:
            log.warning(
                "input %s: peer %s (%s): authentication failed: %s%s",
                self.server.name,
                self.peer,
                peer_text(ping.hostname),
                reason,
                f" (and {held} more times since the last line)" if held else "",
            )
        self.closing = True
        self.transport.close()  # after the PONG is written

    def _inject_source(self, entries: bytes) -> bytes:
        unpacker = msgpack.Unpacker(
            raw=False, strict_map_key=False, unicode_errors="surrogateescape", max_buffer_size=max(len(entries), 1024)
        )
        unpacker.feed(entries)
        packer = msgpack.Packer(unicode_errors="surrogateescape")
        out = []
        for time_ext, record in unpacker:
            if self.cfg.source_address_key:
                record[self.cfg.source_address_key] = self.source_address
            if self.cfg.source_hostname_key:
                record[self.cfg.source_hostname_key] = self.source_hostname or self.source_address
            out.append(packer.pack([time_ext, record]))
        return b"".join(out)

    # -- flow control ----------------------------------------------------

    def _check_pressure(self) -> None:
        if not self.paused and (len(self.inflight) >= self.cfg.max_inflight_frames or self.server.ingest.is_full()):
            self.paused = True
            self.transport.pause_reading()

    def pause_writing(self) -> None:
        """asyncio: the acks not yet taken by the peer are over the write buffer's high-water mark.
        A peer that never reads its acks must not make the agent hold them without end: read
        nothing more from it until it has taken them."""
        self.acks_unread = True
        if not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.acks_unread = False
        self.maybe_resume()

    def maybe_resume(self) -> None:
        if (
            self.paused
            and not self.closing
            and not self.acks_unread
            and not self._eof
            and self._parsing is None
            and len(self.inflight) < self.cfg.max_inflight_frames
            and not self.server.ingest.is_full()
            and (self.source_hostname or not self.cfg.source_hostname_key)
        ):
            self.paused = False
            self.transport.resume_reading()

    def finish(self) -> None:
        """Shutdown: read nothing more; close once the in-flight frames are acked."""
        self.closing = True
        if not self.inflight:
            self.transport.close()
        else:
            try:
                self.transport.pause_reading()
            except RuntimeError:
                pass

    def abort(self, reason: str) -> None:
        if self.transport.is_closing():
            self.closing = True
            return
        self.server.say_closing(self.peer_host, self.peer, reason)
        self.closing = True
        self.transport.abort()


class _HeartbeatProtocol(asyncio.DatagramProtocol):
    """Fluentd's UDP heartbeat: any small datagram is answered with one NUL byte."""

    transport: asyncio.DatagramTransport

    def __init__(self, server: ForwardInput):
        self.server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) <= UDP_HEARTBEAT_MAX:
            self.server.stats.heartbeats += 1
            self.transport.sendto(b"\x00", addr)


def _connection_limit(configured: int) -> int:
    """max_connections, kept FD_RESERVE under the open-file limit (raised to its hard limit first):
    peers holding every descriptor locked out the journal, the monitor and healthy clients."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or hard > soft):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, soft - FD_RESERVE))


def socket_for(bind: str, port: int) -> socket.socket:
    """A listening TCP socket on ``bind``:``port`` (the first address the name resolves to)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        bind or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(1024)
    except BaseException:
        sock.close()
        raise
    return sock


def _loopback(bind: str) -> bool:
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return bind == "localhost"


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def build(cfg: ForwardInputConfig, ingest: Ingest, data_dir: Path) -> ForwardInput:
    return ForwardInput(cfg, ingest)
