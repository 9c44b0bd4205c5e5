"""The pipes between the main process and a delivery process: framed messages, both ways.

A message is one kind byte, a 4-byte big-endian length and that many bytes of body. The
main process tells a delivery process to take a new config (``PREPARE``: stop the outputs
that change, then ``APPLY``: start the new ones, agent/reload.py); the delivery process
answers each. Two pipes rather than a socket: they exist before either process has a
loop (agent/delivery/supervisor.py forks before there is one), and a pipe's end of file
is how each side learns that the other is gone.
"""

from __future__ import annotations

import asyncio
import os
import struct

PREPARE = b"P"  # body: JSON {"config": text, "origin": path, "end": [segment, offset]}
STOPPED = b"S"  # the outputs that change have stopped, their cursors saved
APPLY = b"A"  # start what the prepared config adds
APPLIED = b"D"  # body: JSON {"errors": [...]}

_HEAD = struct.Struct(">cI")
MAX_BODY = 4 << 20  # a config is at most 1 MiB (agent/config/document.py), its JSON a little more


class ChannelClosed(Exception):
    """The other process closed its end (it exited, or is exiting)."""


class Channel:
    """One process's ends of the two pipes, on its event loop."""

    def __init__(self, reader: asyncio.StreamReader, reading: asyncio.ReadTransport, transport: asyncio.WriteTransport):
        self._reader = reader
        self._reading = reading
        self._transport = transport

    @classmethod
    async def open(cls, read_fd: int, write_fd: int) -> Channel:
        """The loop owns both fds from now on (``close`` closes them)."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=MAX_BODY)
        reading, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", 0)
        )
        transport, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(write_fd, "wb", 0))
        return cls(reader, reading, transport)

    def send(self, kind: bytes, body: bytes = b"") -> None:
        if self._transport.is_closing():
            raise ChannelClosed("the pipe is closed")
        self._transport.write(_HEAD.pack(kind, len(body)) + body)

    async def receive(self) -> tuple[bytes, bytes]:
        try:
            kind, size = _HEAD.unpack(await self._reader.readexactly(_HEAD.size))
            if size > MAX_BODY:
                raise ChannelClosed(f"a message of {size} bytes")
            return kind, await self._reader.readexactly(size)
        except asyncio.IncompleteReadError:
            raise ChannelClosed("end of file") from None

    async def read_byte(self) -> bytes:
        """One unframed byte (the delivery process's "R", said before the channel is framed); b"" at EOF."""
        return await self._reader.read(1)

    def close(self) -> None:
        self._transport.close()
        self._reading.close()
