"""One Forward connection: the asyncio adapter around the protocol's session.

The session (agent/protocol/forward/session.py) holds the protocol: the handshake, the bytes
allowed before it, frame splitting, acks in frame order. This adapter carries out what it
says (writes, closes), parses the frames it hands over (a costly one in a thread), gives
their events to the ingest step, tells the session when each is durable, and holds the
socket's reading with one :class:`FlowControl` that records why.

* A frame's ack is written only once the ingest step says it is durable, in frame order.
* A protocol error logs one line naming the peer and the reason and closes this connection
  only; acks already written stay valid, frames not yet durable are never acked.
* Backpressure: while the journal is full, or too many frames of this connection wait for it,
  the connection reads nothing. Nothing is dropped, nothing is acked early.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import socket
import time
from collections import deque
from typing import TYPE_CHECKING, Any, cast

import msgpack

from agent import tasks
from agent.errors import JournalClosed
from agent.ingest import when_all
from agent.inputs.forward.flow import FlowControl, Held
from agent.log import peer_text
from agent.protocol import forward as fwd
from agent.protocol.forward import session as proto

if TYPE_CHECKING:
    from agent.inputs.forward.server import ForwardInput

log = logging.getLogger("agent.input.forward")

# Costly frames are parsed one at a time, off the event loop: each may inflate to
# max_decompressed_size, so a thread each would multiply that by the pool's size.
_COSTLY_PARSER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="forward-parse")
RESOLVE_TIMEOUT = 2.0  # seconds a peer's reverse DNS may take (source_hostname_key) before its IP is used


def hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ForwardConnection(asyncio.Protocol):
    transport: asyncio.Transport  # from connection_made, asyncio's first call
    flow: FlowControl

    def __init__(self, server: ForwardInput):
        self.server = server
        self.cfg = server.cfg
        self.peer = "?"
        self.peer_host = "?"  # repeated failures are summarized per host, whatever the port
        self.session = proto.ServerSession(
            max_frame_size=self.cfg.max_frame_size,
            max_decompressed_size=self.cfg.max_decompressed_size,
            shared_key=server.shared_key,
            users=server.users,
            self_hostname=server.self_hostname,
            throttled_for=lambda: server.auth_throttle.wait(self.peer_host),
        )
        self.closing = False
        self.source_address: str | None = None
        self.source_hostname: str | None = None
        self._resolver: asyncio.Task | None = None
        self._held: list[bytes] | None = None  # bytes that arrive while the name is looked up
        self._handshake_timer: asyncio.TimerHandle | None = None
        self.last_data = time.monotonic()
        self._waiting: deque[bytes] = deque()  # whole frames not yet parsed, in order
        self._parsing: asyncio.Future | None = None  # a costly frame being parsed in a thread
        self._eof = False  # the peer is done sending; what it sent is still handled
        self.frame_started: float | None = None  # when the incomplete frame held now began
        self.buffered = 0  # its bytes

    @property
    def inflight(self) -> int:
        return self.session.in_flight

    @property
    def authenticated(self) -> bool:
        return self.session.authenticated

    # -- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.flow = FlowControl(self.transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peer, self.peer_host, self.source_address = hostport(peer[0], peer[1]), peer[0], peer[0]
        else:
            self.peer, self.peer_host, self.source_address = "unix socket", "unix", "unix"
        if len(self.server.connections) >= self.server.max_connections:
            self.server.stats.refused_connections += 1
            self.abort(f"{self.server.max_connections} connections already (max_connections)")
            return
        self.server.connections.add(self)
        self.server.stats.connections += 1
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.cfg.source_hostname_key and isinstance(peer, tuple):
            # Reverse DNS only when asked, and without blocking the loop: hold
            # the connection's frames until the name is known.
            self.flow.pause(Held.RESOLVING)
            self._held = []
            self._resolver = tasks.spawn(self._resolve(peer), f"{self.server.name}-resolve", owner=self.server.name)
        if not self.session.authenticated:
            self._handshake_timer = asyncio.get_running_loop().call_later(
                self.cfg.handshake_timeout, self._handshake_expired
            )
        self._carry_out(self.session.start(os.urandom(16), os.urandom(16)))

    def _handshake_expired(self) -> None:
        self._carry_out(self.session.handshake_expired(self.cfg.handshake_timeout))

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
        self.flow.resume(Held.RESOLVING)

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
        events = self.session.receive(data)
        if self._count_buffered(self.session.buffered):
            return
        self._carry_out(events)
        self._next_frames()

    def eof_received(self) -> bool | None:
        if self.session.buffered:
            log.warning(
                "input %s: peer %s: connection closed inside a frame (%d bytes dropped, not acked)",
                self.server.name,
                self.peer,
                self.session.buffered,
            )
        if self.inflight or self._waiting or self._parsing is not None:
            self._eof = True  # handle what arrived, close once its acks are out
            self.flow.pause(Held.CLOSING)
            return True
        return False

    def pause_writing(self) -> None:
        """asyncio: the acks not yet taken by the peer are over the write buffer's high-water mark.
        A peer that never reads its acks must not make the agent hold them without end: read
        nothing more from it until it has taken them."""
        self.flow.pause(Held.ACKS_UNREAD)

    def resume_writing(self) -> None:
        self.flow.resume(Held.ACKS_UNREAD)

    # -- what the session says ---------------------------------------------

    def _carry_out(self, events: list[proto.Event]) -> None:
        stats = self.server.stats
        for event in events:
            if isinstance(event, proto.FrameReady):
                self._waiting.append(event.data)
            elif isinstance(event, proto.Send):
                if not self.transport.is_closing():
                    self.transport.write(event.data)
                    stats.acks += event.ack
            elif isinstance(event, proto.HeartbeatSeen):
                stats.heartbeats += 1
            elif isinstance(event, proto.Authenticated):
                self.server.auth_throttle.passed(self.peer_host)
                if self._handshake_timer is not None:
                    self._handshake_timer.cancel()
            elif isinstance(event, proto.AuthFailed):
                stats.auth_failures += 1
                if not event.throttled:
                    self.server.auth_throttle.failed(self.peer_host)
                    self._say_auth_failed(event)
            elif isinstance(event, proto.Close):
                self._close(event)

    def _close(self, event: proto.Close) -> None:
        if event.graceful:  # after the PONG that says why
            self.closing = True
            self.flow.pause(Held.CLOSING)
            self.transport.close()
            return
        if event.kind == "protocol":
            self.server.stats.protocol_errors += 1
        elif event.kind == "auth":
            self.server.stats.auth_failures += 1
        self.abort(event.reason)

    def _say_auth_failed(self, event: proto.AuthFailed) -> None:
        held = self.server.failures.should_log((self.peer_host, "auth"))
        if held is not None:
            log.warning(
                "input %s: peer %s (%s): authentication failed: %s%s",
                self.server.name,
                self.peer,
                peer_text(event.hostname),
                event.reason,
                f" (and {held} more times since the last line)" if held else "",
            )

    # -- frames ------------------------------------------------------------

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
                self.flow.pause(Held.PARSING)
                return
            try:
                parsed = fwd.parse_frame(frame, time.time_ns(), self.cfg.max_decompressed_size)
            except Exception as exc:  # ProtocolError, or whatever the bytes did: one line
                self._undecodable(exc)
                return
            self._handle(parsed)
        self._check_room()
        if self._done_after_eof():
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
        self.flow.resume(Held.PARSING)
        self._next_frames()

    def _undecodable(self, exc: BaseException) -> None:
        self.server.stats.protocol_errors += 1
        reason = getattr(exc, "reason", None)
        self.abort(reason if isinstance(reason, str) else f"undecodable bytes: {type(exc).__name__}: {exc}")

    def _done_after_eof(self) -> bool:
        return (self.closing or self._eof) and not self.inflight and not self._waiting and self._parsing is None

    def _handle(self, frame: fwd.Frame) -> None:
        if not isinstance(frame, fwd.EventBatch):  # the session keeps PINGs and heartbeats
            return
        stats = self.server.stats
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
            self._carry_out(self.session.settle(self.session.expect_ack(frame.chunk)))
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
        number = self.session.expect_ack(frame.chunk)
        if not written:  # nothing to write (no entries, or the filters kept none)
            self._carry_out(self.session.settle(number))
            return
        when_all(written).add_done_callback(lambda done: self._on_durable(number, done))

    def _on_durable(self, number: int, done: asyncio.Future) -> None:
        exc = done.exception()
        self._carry_out(self.session.settle(number, None if exc is None else str(exc)))
        self._check_room()
        if self._done_after_eof():
            self.transport.close()

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

    # -- bounds ------------------------------------------------------------

    def _check_room(self) -> None:
        """Backpressure, both ways: frames waiting for the journal, and the journal's room."""
        if self.closing:
            return
        self.flow.set(Held.IN_FLIGHT, self.inflight >= self.cfg.max_inflight_frames)
        self.flow.set(Held.JOURNAL_FULL, self.server.ingest.is_full())

    def maybe_resume(self) -> None:
        """The journal has room again (the ingest step's on_room)."""
        self._check_room()

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

    def finish(self) -> None:
        """Shutdown: read nothing more; close once the in-flight frames are acked."""
        self.closing = True
        if not self.inflight:
            self.transport.close()
        else:
            self.flow.pause(Held.CLOSING)

    def abort(self, reason: str) -> None:
        self.closing = True
        if self.transport.is_closing():
            return
        self.server.say_closing(self.peer_host, self.peer, reason)
        self.transport.abort()
