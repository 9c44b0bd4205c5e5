"""``type = "forward"``: what the Forward input takes (Fluentd's in_forward options, and its bounds)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from agent.config.types import (
    Duration,
    InputConfigBase,
    Interval,
    Secret,
    Size,
    Strict,
    at_least,
    check_readable,
    check_tls_pair,
)


class User(Strict, frozen=True, kw_only=True):
    username: str
    password: Secret


class ForwardInputConfig(InputConfigBase, frozen=True, kw_only=True):
    """Fluentd's in_forward: TCP (and TLS), a unix socket, the UDP heartbeat."""

    type: Literal["forward"]
    bind: str = "0.0.0.0"
    port: Annotated[int, Meta(ge=0, le=65535)] = 24224
    unix_path: Path | None = None
    udp_heartbeat: bool = True
    shared_key: Secret | None = None
    self_hostname: str = msgspec.field(default_factory=socket.gethostname)
    users: list[User] = msgspec.field(default_factory=list)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None  # when set, clients must present a certificate signed by it
    max_frame_size: Size = 16 * 1024 * 1024  # at least 1KiB, as the two below
    max_decompressed_size: Size = 64 * 1024 * 1024
    source_address_key: str | None = None
    source_hostname_key: str | None = None
    max_inflight_frames: Annotated[int, Meta(ge=1)] = 8
    # With shared_key: a connection that has not authenticated by then is closed.
    handshake_timeout: Interval = 10.0
    # With TLS: a connection whose TLS handshake has not completed by then is closed (asyncio's
    # default is 60 s, long enough for stalled ClientHellos to take every descriptor).
    tls_handshake_timeout: Interval = 5.0
    # Bounds on what peers can hold: connections at once (also kept under the open-file limit),
    # the time a started frame has to complete (a 1 byte/s sender), the time a connection may stay
    # silent (0: for ever, as Fluentd), and the bytes of incomplete frames across all connections.
    max_connections: Annotated[int, Meta(ge=1)] = 4096
    frame_timeout: Interval = 60.0
    idle_timeout: Duration = 3600.0
    max_buffered_bytes: Size = 256 * 1024 * 1024

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least(self, max_frame_size=1024, max_decompressed_size=1024, max_buffered_bytes=1024)
        check_tls_pair(self.tls_cert, self.tls_key)
        if self.tls_ca is not None and self.tls_cert is None:
            raise ValueError("tls_ca needs tls_cert and tls_key")
        if self.users and self.shared_key is None:
            raise ValueError("users need shared_key (the handshake carries them)")
        check_readable(tls_cert=self.tls_cert, tls_key=self.tls_key, tls_ca=self.tls_ca)

    def listens_on(self) -> tuple[str, int] | None:
        return (self.bind, self.port) if self.port else None

    def describe(self) -> str:
        extra = [w for w, on in (("shared_key", self.shared_key), ("tls", self.tls_cert)) if on]
        if self.unix_path:
            extra.append(f"unix {self.unix_path}")
        return f"forward {self.bind}:{self.port}" + (f" ({', '.join(extra)})" if extra else "")
