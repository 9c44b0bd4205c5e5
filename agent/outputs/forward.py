"""``type = "forward"``: Fluentd out_forward, for the Hive collectors.

What matters for Hive, as Fluentd's out_forward does it:

* several servers with weights, picked by smooth weighted round robin among
  the healthy ones (``standby`` servers only when no primary is healthy); a
  server that fails is skipped for ``recover_wait`` and the same events fail
  over to the next one within the same send;
* consecutive journal batches of one tag go as one PackedForward message
  (gzip with ``compress = "gzip"``) with a fresh ``chunk`` id; with
  ``require_ack_response`` the send succeeds only when every chunk's ack has
  come back within ``ack_response_timeout``, and the delivery loop saves its
  cursor as the acks come (chunks of about ACK_PIECE_BYTES, written all at
  once): after a failure or a kill it sends again what was not acked
  (at-least-once: a chunk whose ack was on the way repeats; Hive drops
  repeated transaction_ids);
* the shared-key handshake (HELO/PING/PONG, users), TLS, and keepalive
  connections;
* heartbeats (``heartbeat_type`` transport: a TCP connect, or udp: Fluentd's
  one NUL byte, every ``heartbeat_interval``): a server that stops answering is
  skipped before a send has to fail on it, and taken back when it answers;
* chunks of at most ``chunk_limit_records`` and ``chunk_limit_size``.

The journal batch payload already holds PackedForward entries, so nothing is
re-encoded, except to write records in another ``key_style``: the default,
"snake", takes out the fields outside the Hive spec that the hive filter keeps
for the mirrors (agent/hive/records.py), so they never reach Hive.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import msgpack
import msgspec
from msgspec import Meta

from agent import tasks
from agent.component import Outcome, Output, Progress
from agent.config.types import (
    Duration,
    Interval,
    KeyStyle,
    OutputConfigBase,
    Secret,
    Size,
    Strict,
    check_tls_pair,
)
from agent.errors import ProtocolError
from agent.journal.batch import TagBatch
from agent.outputs.forward_chunks import Message, chunk_messages
from agent.protocol import forward as fwd

# What a server says back (an ack of a 24-character chunk id, a HELO, a PONG) is a few dozen bytes
# in a map or an array of a few entries: a reply past these is no forward server's. msgpack's
# defaults (from max_buffer_size, 100 MiB) let a 5-byte array header make it allocate a list of
# 100 million items, and it builds a reply of many short parts as they come, whatever their sum:
# next_reply bounds the sum.
REPLY_LIMIT = 64 << 10
REPLY_ITEMS = 32

log = logging.getLogger("agent.output.forward")


class ForwardServer(Strict, frozen=True, kw_only=True):
    host: str
    port: Annotated[int, Meta(ge=1, le=65535)] = 24224
    weight: Annotated[int, Meta(ge=1)] = 60
    standby: bool = False


class ForwardOutputConfig(OutputConfigBase, frozen=True, kw_only=True):
    """Fluentd out_forward to aggregators (the Hive collectors)."""

    type: Literal["forward"]
    servers: Annotated[list[ForwardServer], Meta(min_length=1)]
    require_ack_response: bool = False
    ack_response_timeout: Interval = 190.0
    connect_timeout: Interval = 10.0
    recover_wait: Duration = 10.0
    keepalive: bool = True
    compress: Literal["text", "gzip"] = "text"
    heartbeat_type: Literal["transport", "udp", "none"] = "transport"
    heartbeat_interval: Interval = 1.0
    chunk_limit_records: Annotated[int, Meta(ge=1)] = 10_000
    chunk_limit_size: Size = 8 * 1024 * 1024
    shared_key: Secret | None = None
    self_hostname: str = msgspec.field(default_factory=socket.gethostname)
    username: str | None = None
    password: Secret | None = None
    tls: bool = False
    tls_ca: Path | None = None
    tls_verify: bool = True
    tls_verify_hostname: bool = True
    tls_cert: Path | None = None  # a client certificate, when the server asks for one
    tls_key: Path | None = None
    # "snake": the fields outside the Hive spec (kept by the hive filter for the mirrors) never reach the servers.
    key_style: KeyStyle = "snake"

    @property
    def renders_hive_spec(self) -> bool:
        return self.key_style != "raw"  # snake or camel: the spec's fields alone

    def __post_init__(self) -> None:
        super().__post_init__()
        check_tls_pair(self.tls_cert, self.tls_key)
        if self.username and self.shared_key is None:
            raise ValueError("username needs shared_key (the handshake carries it)")

    def destination(self) -> str:
        return "to " + ", ".join(f"{s.host}:{s.port}" for s in self.servers)


class SendError(Exception):
    pass


@dataclass
class _Server:
    host: str
    port: int
    weight: int
    standby: bool
    current: int = 0
    down_until: float = 0.0
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    unpacker: msgpack.Unpacker | None = None
    last_error: str = ""

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"

    def streams(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, msgpack.Unpacker]:
        """The open connection's reader, writer and reply unpacker."""
        if self.reader is None or self.writer is None or self.unpacker is None:
            raise SendError(f"{self.name}: not connected")
        return self.reader, self.writer, self.unpacker


class ForwardOutput(Output):
    def __init__(self, cfg: ForwardOutputConfig):
        self.name = cfg.name
        self.cfg = cfg
        self.servers = [_Server(s.host, s.port, s.weight, s.standby) for s in cfg.servers]
        self.shared_key = cfg.shared_key.get_secret_value().encode() if cfg.shared_key else None
        self.self_hostname = cfg.self_hostname.encode()
        self.username = (cfg.username or "").encode()
        self.password = cfg.password.get_secret_value().encode() if cfg.password else b""
        self.ssl = self._ssl_context() if cfg.tls else None
        self.salt = os.urandom(16).hex().encode()  # Fluentd's salt: SecureRandom.hex(16)
        self._heartbeat: asyncio.Task | None = None

    def _ssl_context(self) -> ssl.SSLContext:
        cfg = self.cfg
        ctx = ssl.create_default_context(cafile=str(cfg.tls_ca) if cfg.tls_ca else None)
        ctx.check_hostname = cfg.tls_verify_hostname
        if not cfg.tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if cfg.tls_cert:
            ctx.load_cert_chain(str(cfg.tls_cert), str(cfg.tls_key))
        return ctx

    async def start(self) -> None:
        if self.cfg.heartbeat_type != "none":
            # Without it a server marked down is never tried again: critical.
            self._heartbeat = tasks.spawn(self._heartbeats(), f"{self.name}-heartbeat", owner=self.name, critical=True)

    async def _heartbeats(self) -> None:
        """Fluentd's heartbeat: a server that answers is up, one that does not is skipped."""
        while True:
            await asyncio.sleep(self.cfg.heartbeat_interval)
            for server in self.servers:
                alive = await self._heartbeat_once(server)
                now = time.monotonic()
                if alive and server.down_until > now:
                    server.down_until = 0.0
                    log.info("output %s: server %s answers heartbeats again", self.name, server.name)
                elif not alive and server.down_until <= now:
                    server.down_until = now + self.cfg.recover_wait
                    server.last_error = "no heartbeat"
                    self._close(server)
                    log.warning("output %s: server %s does not answer heartbeats; skipped", self.name, server.name)

    async def _heartbeat_once(self, server: _Server) -> bool:
        timeout = min(self.cfg.heartbeat_interval, self.cfg.connect_timeout)
        try:
            if self.cfg.heartbeat_type == "udp":
                loop = asyncio.get_running_loop()
                answered = loop.create_future()

                class _Probe(asyncio.DatagramProtocol):
                    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
                        if not answered.done():
                            answered.set_result(data)

                transport, _ = await loop.create_datagram_endpoint(_Probe, remote_addr=(server.host, server.port))
                try:
                    transport.sendto(b"\x00")
                    return await asyncio.wait_for(answered, timeout) == b"\x00"
                finally:
                    transport.close()
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    server.host, server.port, ssl=self.ssl, server_hostname=server.host if self.ssl else None
                ),
                timeout,
            )
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, ssl.SSLError):
                pass
            return True
        except (TimeoutError, OSError, ssl.SSLError):
            return False

    # -- server choice -------------------------------------------------------

    def _pick(self, exclude: set[int]) -> int | None:
        now = time.monotonic()
        healthy = [i for i, s in enumerate(self.servers) if i not in exclude and s.down_until <= now]
        primaries = [i for i in healthy if not self.servers[i].standby]
        pool = primaries or healthy
        if not pool:
            return None
        total = sum(self.servers[i].weight for i in pool)
        for i in pool:
            self.servers[i].current += self.servers[i].weight
        best = max(pool, key=lambda i: self.servers[i].current)
        self.servers[best].current -= total
        return best

    # -- sending ---------------------------------------------------------------

    def _messages(self, batches: list[TagBatch], pieces: bool = False) -> list[Message]:
        cfg = self.cfg
        return chunk_messages(
            batches, cfg.key_style, cfg.chunk_limit_records, cfg.chunk_limit_size, cfg.compress == "gzip", pieces
        )

    async def send(self, batches: list[TagBatch]) -> Outcome:
        return await self.send_with_progress(batches, None)

    async def send_with_progress(self, batches: list[TagBatch], progress: Progress | None) -> Outcome:
        """Each chunk goes to the server the weighted round robin picks for it (as Fluentd
        balances per chunk); the chunks of a server that fails go to the others. With acks,
        ``progress(n)`` is awaited whenever the first n batches are acked whole: chunks of at most
        ACK_PIECE_BYTES are written all at once and acked one by one, so a kill of the agent
        repeats the few chunks whose acks were on the way, not the whole send."""
        pieces = progress is not None and self.cfg.require_ack_response
        messages = self._messages(batches, pieces)
        pending = list(messages)
        acked = [False] * len(messages)
        through = 0  # messages acked in a row from the first

        async def on_ack(message: Message) -> None:
            nonlocal through
            acked[message.index] = True
            before = through
            while through < len(acked) and acked[through]:
                through += 1
            if progress is not None and through > before and messages[through - 1].done:
                await progress(messages[through - 1].done)

        failed: set[int] = set()
        errors: list[str] = []
        while pending:
            groups: dict[int, list[Message]] = {}
            for item in pending:
                index = self._pick(failed)
                if index is None:
                    if not errors:
                        errors = [f"{s.name}: down ({s.last_error or 'recovering'})" for s in self.servers]
                    return Outcome.retry("no server took the chunks: " + "; ".join(errors))
                groups.setdefault(index, []).append(item)
            results = await asyncio.gather(*(self._send_group(i, g, on_ack) for i, g in groups.items()))
            pending = []
            for (index, group), error in zip(groups.items(), results):
                if error is not None:
                    failed.add(index)
                    errors.append(f"{self.servers[index].name}: {error}")
                    pending.extend(m for m in group if not acked[m.index])  # what it acked is delivered
        return Outcome.ok()

    async def _send_group(
        self, index: int, group: list[Message], on_ack: Callable[[Message], Awaitable[None]]
    ) -> str | None:
        """Send chunks to one server and wait for their acks; None, or why it failed."""
        server = self.servers[index]
        try:
            await self._send_to(server, group, on_ack)
            return None
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ProtocolError, SendError, ssl.SSLError) as exc:
            reason = _describe(exc)
            server.last_error = reason
            server.down_until = time.monotonic() + self.cfg.recover_wait
            self._close(server)
            log.warning(
                "output %s: server %s failed (%s); it is skipped for %.0fs",
                self.name,
                server.name,
                reason,
                self.cfg.recover_wait,
            )
            return reason

    async def _send_to(
        self, server: _Server, messages: list[Message], on_ack: Callable[[Message], Awaitable[None]]
    ) -> None:
        if server.writer is None or server.writer.is_closing():
            await self._connect(server)
        _, writer, _ = server.streams()
        writer.write(b"".join(m.data for m in messages))
        await writer.drain()
        if self.cfg.require_ack_response:
            deadline = time.monotonic() + self.cfg.ack_response_timeout
            for message in messages:
                reply = await self._read(server, max(0.01, deadline - time.monotonic()))
                if not (isinstance(reply, dict) and reply.get("ack") == message.chunk):
                    raise SendError(f"ack mismatch: expected {message.chunk!r}, got {reply!r:.80}")
                await on_ack(message)
        if not self.cfg.keepalive:
            self._close(server)

    async def _read(self, server: _Server, timeout: float) -> object:
        reader, _, unpacker = server.streams()
        return await next_reply(unpacker, reader, timeout, "connection closed by the server")

    async def _connect(self, server: _Server) -> None:
        self._close(server)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                server.host, server.port, ssl=self.ssl, server_hostname=server.host if self.ssl else None
            ),
            self.cfg.connect_timeout,
        )
        server.reader, server.writer = reader, writer
        server.unpacker = reply_unpacker(raw=False)
        if self.shared_key is not None:
            await self._handshake(server, self.shared_key)

    async def _handshake(self, server: _Server, shared_key: bytes) -> None:
        raw = reply_unpacker(raw=True)
        timeout = self.cfg.connect_timeout
        reader, writer, _ = server.streams()

        closed = "connection closed during the handshake"
        helo = fwd.parse_helo(await next_reply(raw, reader, timeout, closed))
        writer.write(
            fwd.ping(
                helo,
                hostname=self.self_hostname,
                shared_key=shared_key,
                salt=self.salt,
                username=self.username,
                password=self.password,
            )
        )
        await writer.drain()
        reason = fwd.check_pong(
            await next_reply(raw, reader, timeout, closed),
            helo=helo,
            salt=self.salt,
            shared_key=shared_key,
            self_hostname=self.self_hostname,
        )
        if reason is not None:
            raise SendError(f"handshake failed: {reason}")

    def _close(self, server: _Server) -> None:
        if server.writer is not None:
            server.writer.close()
        server.reader = server.writer = server.unpacker = None

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        for server in self.servers:
            writer = server.writer
            self._close(server)
            if writer is not None:
                try:
                    await writer.wait_closed()
                except (OSError, ssl.SSLError):
                    pass


def reply_unpacker(raw: bool) -> msgpack.Unpacker:
    return msgpack.Unpacker(
        raw=raw,
        max_buffer_size=4 * REPLY_LIMIT,  # a read of REPLY_LIMIT after a partial string of as much
        max_str_len=REPLY_LIMIT,
        max_bin_len=REPLY_LIMIT,
        max_ext_len=REPLY_LIMIT,
        max_array_len=REPLY_ITEMS,
        max_map_len=REPLY_ITEMS,
    )


async def next_reply(unpacker: msgpack.Unpacker, reader: asyncio.StreamReader, timeout: float, closed: str) -> object:
    """The server's next reply. A server that sends more than REPLY_LIMIT bytes with no whole
    reply in them, or what is no msgpack within the Unpacker's bounds, fails at once."""
    fed = 0
    while True:
        try:
            return next(unpacker)
        except StopIteration:
            pass
        except ValueError as exc:  # msgpack's FormatError, StackError, or a length or a count past the bounds
            raise SendError(
                f"the server's reply is past a reply's bounds or no msgpack ({type(exc).__name__})"
            ) from None
        if fed > REPLY_LIMIT:
            raise SendError(f"the server sent {fed} bytes and no whole reply")
        data = await asyncio.wait_for(reader.read(REPLY_LIMIT), timeout)
        if not data:
            raise SendError(closed)
        fed += len(data)
        unpacker.feed(data)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, ProtocolError):
        return exc.reason
    text = str(exc) or type(exc).__name__
    return text


def build(cfg: ForwardOutputConfig, data_dir: Path) -> ForwardOutput:
    return ForwardOutput(cfg)
