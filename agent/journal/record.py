"""Journal record framing. Pure: bytes in, bytes out.

A segment file is a 16-byte header followed by records::

    header  = b"HIVEJRNL" | u16 version | u16 flags | u32 reserved   (big-endian)
    record  = u32 length | u32 crc32(payload) | payload

The payload of a record is one batch of events encoded as a Forward-mode
message, ``[tag, [[EventTime, record], ...]]`` with an array32 header, so that
readers decode a whole batch in one call and the forward output can send it
on without re-encoding. A record whose length runs past the end of the bytes,
or whose checksum does not match, ends the valid part of a segment: recovery
cuts the file there (a torn tail after a crash).
"""

from __future__ import annotations

import struct
import zlib
from typing import Iterator

import msgpack

MAGIC = b"HIVEJRNL"
VERSION = 1
SEGMENT_HEADER = struct.Struct(">8sHHI")
HEADER_SIZE = SEGMENT_HEADER.size  # 16
RECORD_HEADER = struct.Struct(">II")
RECORD_OVERHEAD = RECORD_HEADER.size
MAX_RECORD = 1 << 30


def segment_header() -> bytes:
    return SEGMENT_HEADER.pack(MAGIC, VERSION, 0, 0)


def check_segment_header(data: bytes) -> str | None:
    """None if ``data`` starts with a valid header, else the reason."""
    if len(data) < HEADER_SIZE:
        return "segment header is truncated"
    magic, version, _flags, _ = SEGMENT_HEADER.unpack_from(data)
    if magic != MAGIC:
        return "not a hive-agent journal segment"
    if version != VERSION:
        return f"journal version {version} is not supported (this agent reads {VERSION})"
    return None


def encode_record(payload: bytes) -> bytes:
    return RECORD_HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def batch_payload(tag: str, entries: bytes, count: int) -> bytes:
    """The Forward-mode message holding ``count`` canonical entries."""
    return b"\x92" + msgpack.packb(tag) + b"\xdd" + count.to_bytes(4, "big") + entries


class Torn(Exception):
    """The bytes end inside a record, or a checksum does not match."""

    def __init__(self, offset: int, reason: str):
        super().__init__(reason)
        self.offset = offset
        self.reason = reason


def iter_records(data: bytes | memoryview, offset: int = 0, *, base: int = 0) -> Iterator[tuple[int, bytes]]:
    """Yield ``(end_offset, payload)`` for each whole record from ``offset``.

    Offsets are relative to ``data`` plus ``base`` (the file offset of data[0]).
    Stops quietly at the end; raises :class:`Torn` at a partial or bad record.
    """
    end = len(data)
    pos = offset
    while pos < end:
        if end - pos < RECORD_OVERHEAD:
            raise Torn(base + pos, "record header is truncated")
        length, crc = RECORD_HEADER.unpack_from(data, pos)
        if length > MAX_RECORD:
            raise Torn(base + pos, f"record length {length} is implausible")
        stop = pos + RECORD_OVERHEAD + length
        if stop > end:
            raise Torn(base + pos, "record is truncated")
        payload = bytes(data[pos + RECORD_OVERHEAD:stop])
        if zlib.crc32(payload) != crc:
            raise Torn(base + pos, "record checksum mismatch")
        yield base + stop, payload
        pos = stop


def _tag_span(payload: bytes) -> tuple[int, int]:
    b = payload[1]
    if 0xA0 <= b <= 0xBF:
        n, start = b & 0x1F, 2
    elif b == 0xD9:
        n, start = payload[2], 3
    elif b == 0xDA:
        n, start = int.from_bytes(payload[2:4], "big"), 4
    else:
        n, start = int.from_bytes(payload[2:6], "big"), 6
    return start, start + n


def peek_tag(payload: bytes) -> str:
    """The tag of a batch payload without decoding its entries."""
    start, end = _tag_span(payload)
    return payload[start:end].decode("utf-8")


def batch_entries(payload: bytes) -> bytes:
    """The concatenated entries of a batch payload (a PackedForward payload as is)."""
    _, end = _tag_span(payload)
    return payload[end + 5:]


def batch_count(payload: bytes) -> int:
    """How many entries a batch payload holds (its array32 header)."""
    _, end = _tag_span(payload)
    return int.from_bytes(payload[end + 1:end + 5], "big")
