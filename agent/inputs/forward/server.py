"""``type = "forward"``: the Forward protocol server (TCP, TLS, unix socket, UDP heartbeat).

The protocol of one connection is agent/protocol/forward/session.py, carried out by
agent/inputs/forward/connection.py; this module owns the listening sockets, the bounds across
connections (how many, the bytes of incomplete frames they hold, their deadlines) and the
input's figures.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import re
import resource
import socket
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from agent import tasks
from agent.component import Input, Metric, Reading
from agent.ingest import Ingest
from agent.inputs.forward.config import ForwardInputConfig
from agent.inputs.forward.connection import ForwardConnection, hostport
from agent.inputs.forward.flow import Held
from agent.inputs.forward.throttle import AuthThrottle
from agent.log import Summary, peer_text

log = logging.getLogger("agent.input.forward")

UDP_HEARTBEAT_MAX = 128
ACCEPT_RETRY_DELAY = 0.1  # seconds between accepts while the process is out of descriptors
FD_RESERVE = 128  # descriptors kept for the journal, the monitor, the delivery process and the tail
SWEEP_INTERVAL = 1.0  # seconds between checks of frame and idle deadlines


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
    cfg: ForwardInputConfig

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
            Reading(Metric.DISCARDED, st.skipped_records, ("invalid_entry",)),
            Reading(Metric.DISCARDED, st.discarded_records, ("not_logs",)),
            Reading(Metric.ERRORS, st.protocol_errors, ("protocol",)),
            Reading(Metric.ERRORS, st.auth_failures, ("auth",)),
            Reading(Metric.ERRORS, st.tls_failures, ("tls",)),
            Reading(Metric.FORWARD_AUTH_FAILURES, st.auth_failures),
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
        self.listening.append(f"{scheme} {hostport(cfg.bind, port)}")
        if cfg.udp_heartbeat:
            self.udp_transport, _ = await loop.create_datagram_endpoint(
                lambda: _HeartbeatProtocol(self), local_addr=(cfg.bind, port)
            )
            self.listening.append(f"udp {hostport(cfg.bind, port)}")
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
                hostport(cfg.bind, port),
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
            self.say_closing(address[0], hostport(address[0], address[1]), reason)
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
                if conn.closing or conn.flow.by_us:
                    continue  # held back by us (backpressure): not the peer's delay
                acks_unread = Held.ACKS_UNREAD in conn.flow.held
                if acks_unread and cfg.idle_timeout and now - conn.last_data > cfg.idle_timeout:
                    conn.abort(f"has not read its acks for idle_timeout ({cfg.idle_timeout:g}s)")
                elif conn.frame_started is not None and now - conn.frame_started > cfg.frame_timeout:
                    conn.abort(f"a frame not complete within frame_timeout ({cfg.frame_timeout:g}s)")
                elif cfg.idle_timeout and not conn.inflight and now - conn.last_data > cfg.idle_timeout:
                    conn.abort(f"idle for idle_timeout ({cfg.idle_timeout:g}s)")

    async def stop(self, timeout: float) -> None:
        """Stop accepting, let connections finish their in-flight frames, then close them."""
        self.ingest.off_room(self._resume_all)
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
