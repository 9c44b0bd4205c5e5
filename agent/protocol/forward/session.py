"""One connection of the Forward protocol, server side, as a pure object: bytes in, events out.

As h11's ``Connection`` is for HTTP: the session holds the protocol's state (the shared-key
handshake, the bytes a peer may send before it, frame splitting, acks in frame order) and
does no I/O. The caller (agent/inputs/forward/connection.py) feeds it what the socket read
and carries out what it returns:

* :class:`FrameReady`: a whole frame's bytes, to parse (agent/protocol/forward/decoder.py
  ``parse_frame``; the caller parses a costly one off its event loop) and handle;
* :class:`Send`: bytes to write (HELO, PONG, acks);
* :class:`Authenticated` / :class:`AuthFailed`: the handshake's outcome, for the caller's
  throttle of failed attempts and its log;
* :class:`HeartbeatSeen`;
* :class:`Close`: close the connection with this reason (after writing what came before it);
  nothing the session returns after it.

Acks: the caller says which frames it took (``expect_ack``, in arrival order) and when each is
durable (``settle``); the session answers with the acks that may go now: strictly in frame
order, whichever write finished first, and none after a failed one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from agent.errors import ProtocolError
from agent.protocol.forward.decoder import ForwardDecoder, ack_bytes, parse_frame
from agent.protocol.forward.frames import Ping, is_ping, may_be_ping
from agent.protocol.forward.handshake import check_ping, helo, pong

PREAUTH_LIMIT = 64 * 1024  # a PING is a few hundred bytes


@dataclass(frozen=True, slots=True)
class FrameReady:
    data: bytes


@dataclass(frozen=True, slots=True)
class Send:
    data: bytes
    ack: bool = False  # an ack, for the caller's count


@dataclass(frozen=True, slots=True)
class Authenticated:
    hostname: bytes


@dataclass(frozen=True, slots=True)
class AuthFailed:
    hostname: bytes
    reason: str
    throttled: bool  # refused unchecked: the host is still waiting out earlier failures


@dataclass(frozen=True, slots=True)
class HeartbeatSeen:
    pass


@dataclass(frozen=True, slots=True)
class Close:
    reason: str
    kind: str  # "protocol", "auth" or "write": what the caller counts it as
    graceful: bool = False  # write what was sent before it, then close (a refused PING's PONG)


Event = FrameReady | Send | Authenticated | AuthFailed | HeartbeatSeen | Close
HEARTBEAT_SEEN = HeartbeatSeen()


class ServerSession:
    def __init__(
        self,
        *,
        max_frame_size: int,
        max_decompressed_size: int,
        shared_key: bytes | None = None,
        users: dict[bytes, bytes] | None = None,
        self_hostname: bytes = b"",
        throttled_for: Callable[[], float] = lambda: 0.0,
    ):
        """``throttled_for``: the seconds this peer's host must still wait after failed attempts."""
        self.decoder = ForwardDecoder(max_frame_size=max_frame_size, max_decompressed_size=max_decompressed_size)
        self.shared_key = shared_key
        self.users = users or {}
        self.self_hostname = self_hostname
        self.throttled_for = throttled_for
        self.authenticated = shared_key is None
        self.closed = False
        self._nonce = b""
        self._auth_salt = b""
        self._preauth = bytearray()
        # Frames taken, in arrival order: [ack bytes or None, settled, error]; the first has number _first.
        self._acks: deque[list[Any]] = deque()
        self._first = 0

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame (or PING) held."""
        return self.decoder.buffered + len(self._preauth)

    @property
    def in_flight(self) -> int:
        """Frames taken and not yet acked (or settled without an ack)."""
        return len(self._acks)

    def start(self, nonce: bytes, auth_salt: bytes) -> list[Event]:
        """The connection is open: with a shared key, the server speaks first (HELO)."""
        if self.authenticated:
            return []
        self._nonce, self._auth_salt = nonce, auth_salt
        return [Send(helo(nonce, auth_salt))]

    def handshake_expired(self, timeout: float) -> list[Event]:
        if self.authenticated or self.closed:
            return []
        return self._close(f"no handshake within handshake_timeout ({timeout:g}s)", "auth")

    def receive(self, data: bytes) -> list[Event]:
        if self.closed:
            return []
        if not self.authenticated:
            return self._before_handshake(data)
        try:
            frames = self.decoder.split(data)
        except ProtocolError as exc:
            return self._close(exc.reason, "protocol")
        events: list[Event] = []
        for frame in frames:
            if frame == b"\xc0":
                events.append(HEARTBEAT_SEEN)
            elif is_ping(frame):
                return events + self._close("unexpected PING (no handshake in progress)", "protocol")
            else:
                events.append(FrameReady(frame))
        return events

    def _before_handshake(self, data: bytes) -> list[Event]:
        """Until the peer has authenticated, the one thing it may send is a small PING: nothing
        else is buffered past PREAUTH_LIMIT, decompressed or scanned."""
        buf = self._preauth
        buf += data
        if not may_be_ping(bytes(buf[:16])):
            return self._close("sent something other than PING before the handshake (shared_key is set)", "protocol")
        if len(buf) > PREAUTH_LIMIT:
            return self._close(f"PING larger than {PREAUTH_LIMIT} bytes", "protocol")
        framer = msgpack.Unpacker(raw=True, max_buffer_size=PREAUTH_LIMIT * 2)
        framer.feed(bytes(buf))
        try:
            framer.skip()
        except msgpack.OutOfData:
            return []  # the rest of the PING is on its way
        except (ValueError, msgpack.UnpackException) as exc:
            return self._close(f"invalid PING: {exc}", "protocol")
        end = framer.tell()
        ping_bytes, rest = bytes(buf[:end]), bytes(buf[end:])
        self._preauth = bytearray()
        try:
            ping = parse_frame(ping_bytes, 0, PREAUTH_LIMIT)
        except ProtocolError as exc:
            return self._close(exc.reason, "protocol")
        if not isinstance(ping, Ping):  # a PING's first bytes, and then not a PING
            return self._close("sent something other than PING before the handshake (shared_key is set)", "protocol")
        events = self._check(ping)
        if self.authenticated and rest:
            events += self.receive(rest)
        return events

    def _check(self, ping: Ping) -> list[Event]:
        assert self.shared_key is not None  # a session without one starts authenticated
        wait = self.throttled_for()
        if wait > 0:  # not checked at all: this host has no guess to make for now
            reason = f"too many failed authentications; retry in {wait:.1f}s"
            return [
                Send(pong(False, reason, self.self_hostname, b"")),
                AuthFailed(ping.hostname, reason, throttled=True),
                *self._close(reason, "auth", graceful=True),
            ]
        ok, reason, answer = check_ping(
            ping,
            nonce=self._nonce,
            auth_salt=self._auth_salt,
            shared_key=self.shared_key,
            self_hostname=self.self_hostname,
            users=self.users,
        )
        if ok:
            self.authenticated = True
            return [Send(answer), Authenticated(ping.hostname)]
        return [
            Send(answer),
            AuthFailed(ping.hostname, reason, throttled=False),
            *self._close(f"authentication failed: {reason}", "auth", graceful=True),
        ]

    # -- acks --------------------------------------------------------------

    def expect_ack(self, chunk: bytes | None) -> int:
        """A frame was taken (``chunk``: its raw chunk option, None when it asks for no ack);
        the number to settle it by."""
        self._acks.append([ack_bytes(chunk) if chunk is not None else None, False, None])
        return self._first + len(self._acks) - 1

    def settle(self, number: int, error: str | None = None) -> list[Event]:
        """The frame is durable (or, with ``error``, never will be): the acks that may go now."""
        if self.closed:
            return []
        entry = self._acks[number - self._first]
        entry[1], entry[2] = True, error
        events: list[Event] = []
        while self._acks and self._acks[0][1]:
            ack, _, failed = self._acks.popleft()
            self._first += 1
            if failed is not None:
                return events + self._close(f"write failed, not acked: {failed}", "write")
            if ack is not None:
                events.append(Send(ack, ack=True))
        return events

    def _close(self, reason: str, kind: str, graceful: bool = False) -> list[Event]:
        self.closed = True
        return [Close(reason, kind, graceful)]
