"""Journal record framing. Pure: bytes in, bytes out.

A segment file is a 16-byte header followed by records::

    header  = b"HIVEJRNL" | u16 version | u16 flags | u32 reserved   (big-endian)
    record  = u32 length | u32 crc32(appended_ns, payload) | u64 appended_ns | payload

``appended_ns`` is the wall-clock time the batch was journaled: it tells how
long the oldest record an output has not delivered has waited.

The payload of a record is one batch of events encoded as a Forward-mode
message, ``[tag, [[EventTime, record], ...]]`` with an array32 header, so that
readers decode a whole batch in one call and the forward output can send it
on without re-encoding. A record whose length runs past the end of the bytes,
or whose checksum does not match, is damaged. At the end of a segment that is
a torn tail after a crash, and recovery cuts it. In the middle, recovery finds
the next record whose header and checksum check out (:func:`next_record_start`)
and overwrites the damaged bytes, in place, with one *filler* record (payload
of zero bytes, :func:`filler_record`), so that every offset after it, and every
cursor pointing there, stays valid; readers skip fillers.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

import msgpack

# What the readers take: a segment read whole, a bytearray being repaired, or a view of either.
Buffer = bytes | bytearray | memoryview

MAGIC = b"HIVEJRNL"
VERSION = 1
SEGMENT_HEADER = struct.Struct(">8sHHI")
HEADER_SIZE = SEGMENT_HEADER.size  # 16
RECORD_HEADER = struct.Struct(">IIQ")
_APPENDED = struct.Struct(">Q")
RECORD_OVERHEAD = RECORD_HEADER.size
MAX_RECORD = 1 << 30


def segment_header() -> bytes:
    return SEGMENT_HEADER.pack(MAGIC, VERSION, 0, 0)


def check_segment_header(data: Buffer) -> str | None:
    """None if ``data`` starts with a valid header, else the reason."""
    if len(data) < HEADER_SIZE:
        return "segment header is truncated"
    magic, version, flags, reserved = SEGMENT_HEADER.unpack_from(data)
    if magic != MAGIC:
        return "not a hive-agent journal segment"
    if version != VERSION:
        return f"journal version {version} is not supported (this agent reads {VERSION})"
    if flags or reserved:  # this version writes both as 0
        return f"segment header has flags {flags:#x} and reserved {reserved:#x} (written as 0)"
    return None


def encode_record(payload: bytes, appended_ns: int = 0) -> bytes:
    stamp = _APPENDED.pack(appended_ns)
    return RECORD_HEADER.pack(len(payload), zlib.crc32(payload, zlib.crc32(stamp)), appended_ns) + payload


def batch_payload(tag: str, entries: bytes, count: int, target: str | None = None) -> bytes:
    """The Forward-mode message holding ``count`` canonical entries.

    A batch for one output only (a dead-letter replay) is ``[tag, target, [entries]]``:
    the target sits before the entries so every reader finds both without decoding.
    """
    head: bytes = msgpack.packb(tag)
    if target is not None:
        head += msgpack.packb(target)
    return (b"\x93" if target is not None else b"\x92") + head + b"\xdd" + count.to_bytes(4, "big") + entries


def filler_record(size: int) -> bytes:
    """A record of exactly ``size`` bytes that readers skip: it stands where damaged bytes were."""
    return encode_record(b"\x00" * (size - RECORD_OVERHEAD), FILLER_STAMP)


def is_filler(payload: bytes) -> bool:
    """A batch payload starts with an array header (0x92 or 0x93); a filler with a zero byte."""
    return payload[:1] == b"\x00"


FILLER_STAMP = 1  # appended_ns of a filler: no batch was journaled at 1 ns after the epoch
MIN_FILLER = RECORD_OVERHEAD + 1
# appended_ns of a real record: wall-clock ns between 2001 and 2286 (a cheap test before the CRC).
_PLAUSIBLE_NS = (10**18, 10**19)


def next_record_start(data: bytes | bytearray, start: int) -> int | None:
    """The first offset after ``start`` (at least MIN_FILLER on) where a whole record checks
    out: a plausible header, a batch payload, and its checksum. None when there is none."""
    end = len(data)
    view = memoryview(data)
    pos = start + MIN_FILLER
    # A batch payload starts with 0x92 or 0x93: only the offsets 16 bytes before one are tried.
    found = {mark: -1 for mark in (b"\x92", b"\x93")}  # the next one of each; end: none left
    while pos + RECORD_OVERHEAD < end:
        for mark, at in found.items():
            if at < pos + RECORD_OVERHEAD:
                at = data.find(mark, pos + RECORD_OVERHEAD)
                found[mark] = at if at >= 0 else end
        pos = min(found.values()) - RECORD_OVERHEAD
        if pos + RECORD_OVERHEAD >= end:
            return None
        if _whole_record_at(view, pos, end):
            return pos
        pos += 1
    return None


def whole_record_at(data: bytes | bytearray, pos: int) -> bool:
    """Does a whole record (plausible header, a batch payload, its checksum) start at ``pos``?"""
    return len(data) - pos > RECORD_OVERHEAD and _whole_record_at(memoryview(data), pos, len(data))


def _whole_record_at(view: memoryview, pos: int, end: int) -> bool:
    length, crc, appended_ns = RECORD_HEADER.unpack_from(view, pos)
    stop = pos + RECORD_OVERHEAD + length
    if length < 6 or stop > end or not (_PLAUSIBLE_NS[0] <= appended_ns < _PLAUSIBLE_NS[1]):
        return False
    payload = view[pos + RECORD_OVERHEAD : stop]
    try:  # the tag and the entries' array32 header where a batch has them
        entries = _entries_header(payload)
        if entries + 5 > length or payload[entries] != 0xDD:
            return False
    except (IndexError, ValueError):
        return False
    return bool(zlib.crc32(payload, zlib.crc32(_APPENDED.pack(appended_ns))) == crc)


class Torn(Exception):
    """The bytes end inside a record, or a checksum does not match."""

    def __init__(self, offset: int, reason: str):
        super().__init__(reason)
        self.offset = offset
        self.reason = reason


def iter_records(data: Buffer, offset: int = 0, *, base: int = 0) -> Iterator[tuple[int, bytes, int]]:
    """Yield ``(end_offset, payload, appended_ns)`` for each whole record from ``offset``.

    Offsets are relative to ``data`` plus ``base`` (the file offset of data[0]).
    Stops quietly at the end; raises :class:`Torn` at a partial or bad record.
    """
    end = len(data)
    pos = offset
    while pos < end:
        if end - pos < RECORD_OVERHEAD:
            raise Torn(base + pos, "record header is truncated")
        length, crc, appended_ns = RECORD_HEADER.unpack_from(data, pos)
        if length > MAX_RECORD:
            raise Torn(base + pos, f"record length {length} is implausible")
        stop = pos + RECORD_OVERHEAD + length
        if stop > end:
            raise Torn(base + pos, "record is truncated")
        payload = bytes(data[pos + RECORD_OVERHEAD : stop])
        if zlib.crc32(payload, zlib.crc32(_APPENDED.pack(appended_ns))) != crc:
            raise Torn(base + pos, "record checksum mismatch")
        yield base + stop, payload, appended_ns
        pos = stop


def _str_span(payload: Buffer, pos: int) -> tuple[int, int]:
    """(start, end) of the msgpack str whose header is at ``pos``."""
    b = payload[pos]
    if 0xA0 <= b <= 0xBF:
        n, start = b & 0x1F, pos + 1
    elif b == 0xD9:
        n, start = payload[pos + 1], pos + 2
    elif b == 0xDA:
        n, start = int.from_bytes(payload[pos + 1 : pos + 3], "big"), pos + 3
    elif b == 0xDB:
        n, start = int.from_bytes(payload[pos + 1 : pos + 5], "big"), pos + 5
    else:
        raise ValueError(f"no msgpack str at {pos}")
    return start, start + n


def _tag_span(payload: Buffer) -> tuple[int, int]:
    return _str_span(payload, 1)


def _entries_header(payload: Buffer) -> int:
    """Offset of the array32 header of the entries."""
    _, end = _tag_span(payload)
    if payload[0] == 0x93:
        _, end = _str_span(payload, end)
    return end


def peek_tag(payload: bytes) -> str:
    """The tag of a batch payload without decoding its entries."""
    start, end = _tag_span(payload)
    return payload[start:end].decode("utf-8")


def batch_target(payload: bytes) -> str | None:
    """The one output a batch is for (a replay), or None for every matching output."""
    if payload[0] != 0x93:
        return None
    _, end = _tag_span(payload)
    start, stop = _str_span(payload, end)
    return payload[start:stop].decode("utf-8")


def batch_entries(payload: bytes) -> bytes:
    """The concatenated entries of a batch payload (a PackedForward payload as is)."""
    return payload[_entries_header(payload) + 5 :]


def entries_array(payload: bytes) -> memoryview:
    """The entries of a batch payload as one msgpack array (its array32 header and the entries), not copied."""
    return memoryview(payload)[_entries_header(payload) :]


def batch_count(payload: bytes) -> int:
    """How many entries a batch payload holds (its array32 header)."""
    pos = _entries_header(payload)
    return int.from_bytes(payload[pos + 1 : pos + 5], "big")


def split_payload(payload: bytes) -> tuple[bytes, bytes]:
    """A batch payload of two or more entries as two payloads, each with half the entries (same tag
    and target), cut between the entries' bytes: nothing is decoded, so a record no decoder can
    take apart is carried whole."""
    tag, target = peek_tag(payload), batch_target(payload)
    entries, count = batch_entries(payload), batch_count(payload)
    unpacker = msgpack.Unpacker(raw=True, max_buffer_size=max(len(entries), 1024), strict_map_key=False)
    unpacker.feed(entries)
    first = count // 2
    for _ in range(first):
        unpacker.skip()
    cut = unpacker.tell()
    return (batch_payload(tag, entries[:cut], first, target), batch_payload(tag, entries[cut:], count - first, target))
