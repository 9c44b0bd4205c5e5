"""Entry canonicalisation: ``[time, record]`` entries checked without decoding the records,
and written out in the one form the journal holds, ``[EventTime, {record}]`` concatenated."""

from __future__ import annotations

import re
from collections.abc import Iterator

import msgpack
import msgspec

from agent.protocol.event_time import EVENT_TIME_EXT, NANOS, pack_event_time, unpack_event_time
from agent.protocol.forward.frames import Skipped

MSGPACK_ERRORS = (ValueError, msgpack.FormatError, msgpack.StackError, msgpack.ExtraData)


# 10^9 as the 4 big-endian bytes of an EventTime's nanoseconds: a value at or past it is no
# time (its seconds would carry over, and 2^32-1 of them no longer fit the form).
_NANOS_LIMIT = (10**9).to_bytes(4, "big")


def array_items(data: bytes) -> bytes:
    """The concatenated items of an encoded msgpack array (its header dropped): entries."""
    b = data[0]
    return data[1:] if b < 0xDC else data[3:] if b == 0xDC else data[5:]


def as_array(entries: bytes | memoryview, count: int) -> bytes:
    """Concatenated entries as one msgpack array of ``count`` items (an array32 header before them)."""
    return b"".join((b"\xdd", count.to_bytes(4, "big"), entries))


_raw_items = msgspec.msgpack.Decoder(list[msgspec.Raw])


def array_runs(array: bytes | memoryview, per_run: int) -> Iterator[bytes]:
    """A msgpack array (its header and items) cut into arrays of at most ``per_run`` of its items,
    in order, each encoded with an array32 header: a caller decodes a run at a time, so the items
    are never all in memory as objects together. The items are walked (in C) and copied, never
    decoded. Raises msgspec.DecodeError, at once, if ``array`` is no msgpack array."""
    sizes = [len(item) for item in _raw_items.decode(array)]
    return _runs(array, len(array) - sum(sizes), sizes, per_run)


def _runs(array: bytes | memoryview, at: int, sizes: list[int], per_run: int) -> Iterator[bytes]:
    for i in range(0, len(sizes), per_run):
        run = sizes[i : i + per_run]
        size = sum(run)
        yield as_array(array[at : at + size], len(run))
        at += size


def kind_of(first_byte: int) -> str:
    """A human name for the msgpack type starting with this byte (for errors)."""
    b = first_byte
    if b <= 0x7F or 0xCC <= b <= 0xD3 or b >= 0xE0:
        return "an integer"
    if 0x80 <= b <= 0x8F or b in (0xDE, 0xDF):
        return "a map"
    if 0x90 <= b <= 0x9F or b in (0xDC, 0xDD):
        return "an array"
    if 0xA0 <= b <= 0xBF or b in (0xD9, 0xDA, 0xDB):
        return "a string"
    if b in (0xC4, 0xC5, 0xC6):
        return "binary"
    if b in (0xCA, 0xCB):
        return "a float"
    if b == 0xC0:
        return "nil"
    if b in (0xC2, 0xC3):
        return "a boolean"
    return "an extension"


def is_map(b: int) -> bool:
    return 0x80 <= b <= 0x8F or b == 0xDE or b == 0xDF


def is_array(b: int) -> bool:
    return 0x90 <= b <= 0x9F or b == 0xDC or b == 0xDD


def is_raw(b: int) -> bool:
    return 0xA0 <= b <= 0xBF or 0xD9 <= b <= 0xDB or 0xC4 <= b <= 0xC6


def _time_to_ns(value: object, now_ns: int) -> int | None:
    """A non-EventTime time value → nanoseconds, or None if it is not a time."""
    if value is None:
        return now_ns
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        if value < 0 or value >= 1 << 32:
            return None
        return value * NANOS if value else now_ns
    if isinstance(value, float):
        if not 0.0 <= value < 4294967296.0:
            return None
        return round(value * NANOS) if value else now_ns
    if isinstance(value, msgpack.ExtType):
        if value.code == EVENT_TIME_EXT and len(value.data) == 8 and value.data[4:] < _NANOS_LIMIT:
            ns = unpack_event_time(value.data)
            return ns if ns else now_ns
        return None
    return None


def _nanos_ok(data: bytes, at: int) -> bool:
    """Are the EventTime nanoseconds at ``at`` below 10^9? One byte decides for nearly every time."""
    return data[at] < 0x3B or data[at : at + 4] < _NANOS_LIMIT


def scan_entries(
    data: bytes,
    now_ns: int,
    count: int | None = None,
    start: int = 0,
    unpacker: msgpack.Unpacker | None = None,
    size: int | None = None,
) -> tuple[bytes, int, Skipped]:
    """Validate and canonicalize concatenated ``[time, record]`` entries.

    ``data`` holds the entries from ``start`` (a packed payload, or a whole
    Forward frame positioned at its first entry, in which case ``unpacker``
    is the frame's unpacker and ``count`` the array length). ``size`` is how
    many entries a packed payload's sender says it holds (the ``size``
    option): a hint, never trusted. Returns the canonical entries, how many
    there are, and a reason per skipped entry.
    """
    if size is not None and unpacker is None and _canonical_as_sent(data, size):
        return data, size, Skipped()
    if unpacker is None:
        unpacker = msgpack.Unpacker(raw=True, max_buffer_size=max(len(data), 1024), strict_map_key=False)
        unpacker.feed(data)
    u = unpacker
    end = len(data)
    pieces: list[bytes] = []
    skipped = Skipped()
    good = 0
    run_start = start
    index = 0
    mv = memoryview(data)
    while (index < count) if count is not None else (u.tell() < end):
        index += 1
        pos = u.tell()
        try:
            b = data[pos]
            # Fast path, the shape every sender uses: fixarray(2), fixext8 EventTime,
            # then a map. One skip over the whole entry, no decoding at all.
            if b == 0x92 and data[pos + 1] == 0xD7 and data[pos + 2] == EVENT_TIME_EXT and _nanos_ok(data, pos + 7):
                rb = data[pos + 11]
                if 0x80 <= rb <= 0x8F or rb == 0xDE or rb == 0xDF:
                    u.skip()
                    good += 1
                    continue
            # Integer seconds as uint32 (time_as_integer senders): rewrite the time only.
            if b == 0x92 and data[pos + 1] == 0xCE and data[pos + 2 : pos + 6] != b"\0\0\0\0":
                rb = data[pos + 6]
                if 0x80 <= rb <= 0x8F or rb == 0xDE or rb == 0xDF:
                    u.skip()
                    _close_run(pieces, mv, run_start, pos)
                    run_start = u.tell()
                    pieces.append(b"\x92\xd7\x00" + data[pos + 2 : pos + 6] + b"\0\0\0\0" + data[pos + 6 : run_start])
                    good += 1
                    continue
            if not is_array(b):
                u.skip()
                _close_run(pieces, mv, run_start, pos)
                run_start = u.tell()
                skipped.add("entry %d is %s, not [time, record]", index, kind_of(b))
                continue
            n = u.read_array_header()
            time_pos = u.tell()
            if n < 2:
                for _ in range(n):
                    u.skip()
                _close_run(pieces, mv, run_start, pos)
                run_start = u.tell()
                skipped.add("entry %d has %d elements, not [time, record]", index, n)
                continue
            tb = data[time_pos]
            canonical_time = None  # bytes of a rewritten EventTime
            nanos_at = (
                time_pos + 6
                if tb == 0xD7 and data[time_pos + 1] == EVENT_TIME_EXT
                else time_pos + 7
                if tb == 0xC7 and data[time_pos + 1] == 8 and data[time_pos + 2] == EVENT_TIME_EXT
                else None
            )
            if nanos_at is not None and not _nanos_ok(data, nanos_at):
                u.skip()
                rest = n - 1
                for _ in range(rest):
                    u.skip()
                _close_run(pieces, mv, run_start, pos)
                run_start = u.tell()
                nanos = int.from_bytes(data[nanos_at : nanos_at + 4], "big")
                skipped.add("entry %d: EventTime nanoseconds %d, not below 10^9", index, nanos)
                continue
            if nanos_at is not None:
                u.skip()
                fast = True
            else:
                value = u.unpack()
                if isinstance(value, (list, tuple)):
                    # v1.5 / Fluent Bit 5.x: [time, {metadata}]; metadata is dropped.
                    value = value[0] if value else "empty"
                ns = _time_to_ns(value, now_ns)
                fast = False
                if ns is not None:
                    canonical_time = pack_event_time(ns)
            rec_pos = u.tell()
            rb = data[rec_pos]
            u.skip()
            rec_end = u.tell()
            for _ in range(n - 2):
                u.skip()
            if not is_map(rb):
                _close_run(pieces, mv, run_start, pos)
                run_start = u.tell()
                skipped.add("entry %d: record is %s, not a map", index, kind_of(rb))
                continue
            if not fast and canonical_time is None:
                _close_run(pieces, mv, run_start, pos)
                run_start = u.tell()
                skipped.add("entry %d: time is %s, not an EventTime or integer seconds", index, kind_of(tb))
                continue
            good += 1
            if fast and n == 2:
                continue  # already canonical: stays in the current run
            _close_run(pieces, mv, run_start, pos)
            if canonical_time is None:
                canonical_time = data[time_pos:rec_pos]
            pieces.append(b"\x92" + canonical_time + data[rec_pos:rec_end])
            run_start = u.tell()
        except msgpack.OutOfData:
            _close_run(pieces, mv, run_start, pos)
            run_start = end
            skipped.add("entry %d is truncated at byte %d", index, pos)
            break
        except MSGPACK_ERRORS as exc:
            _close_run(pieces, mv, run_start, pos)
            run_start = end
            skipped.add("entry %d is not msgpack at byte %d (%s); rest of the payload dropped", index, pos, exc)
            break
        except IndexError:
            _close_run(pieces, mv, run_start, pos)
            run_start = end
            skipped.add("entry %d is truncated at byte %d", index, pos)
            break
    stop = u.tell() if count is not None else end
    _close_run(pieces, mv, run_start, min(stop, end))
    entries = pieces[0] if len(pieces) == 1 else b"".join(pieces)
    if good:
        entries, good = _refuse_non_string_keys(entries, good, skipped)
    return entries, good, skipped


# One journal record per frame, up to these: a frame of more (5.2 million empty entries gzip into
# 122 KB) becomes several records, so that no filter, journal reader or output ever holds the
# whole of it decoded (2 GB in the delivery process for that one frame).
MAX_RECORD_ENTRIES = 65_536
MAX_RECORD_BYTES = 8 * 1024 * 1024


def split_entries(
    entries: bytes, count: int, max_entries: int = MAX_RECORD_ENTRIES, max_bytes: int = MAX_RECORD_BYTES
) -> list[tuple[bytes, int]]:
    """Canonical entries cut into runs of at most ``max_entries`` entries and (unless one entry is
    larger) ``max_bytes`` bytes, in order: (entries, count) each; none for no entries. The journal
    records of a huge frame (agent/protocol/forward/decoder.py) and the forward output's chunks
    (``chunk_limit_records``, ``chunk_limit_size``) are cut by it."""
    if not count:
        return []
    if count <= max_entries and len(entries) <= max_bytes:
        return [(entries, count)]
    u = msgpack.Unpacker(raw=True, max_buffer_size=max(len(entries), 1024), strict_map_key=False)
    u.feed(entries)
    parts: list[tuple[bytes, int]] = []
    start = n = 0
    for _ in range(count):
        before = u.tell()
        u.skip()
        if n and (n == max_entries or u.tell() - start > max_bytes):  # this entry starts the next run
            parts.append((entries[start:before], n))
            start, n = before, 0
        n += 1
    parts.append((entries[start:], n))
    return parts


# A record is a map whose keys are strings: JSON, the journal's readers and every output
# rely on it. msgspec checks the keys of many entries in one call, without building a key
# or a value (a struct with no fields skips every member): about 0.3 µs a record. It holds
# the GIL while it runs, so a frame of millions of entries is checked a slice at a time:
# the event loop gets its turn between slices.
class _AnyRecord(msgspec.Struct):
    pass


_check_entries = msgspec.msgpack.Decoder(list[tuple[msgspec.Raw, _AnyRecord]])
_check_entry = msgspec.msgpack.Decoder(tuple[msgspec.Raw, _AnyRecord])
_CHECK_SLICE = 4096  # entries


def _refuse_non_string_keys(entries: bytes, count: int, skipped: Skipped) -> tuple[bytes, int]:
    """The entries whose records have only string keys, and how many; the others skipped."""
    if count <= _CHECK_SLICE:
        return (entries, count) if _keys_are_strings(entries, count) else _drop_non_string_keys(entries, skipped)
    u = _unpacker_of(entries)
    view = memoryview(entries)
    pieces: list[bytes] | None = None  # only once a slice had to change: else the entries stand
    kept = start = 0
    for first in range(0, count, _CHECK_SLICE):
        n = min(_CHECK_SLICE, count - first)
        for _ in range(n):
            u.skip()
        end = u.tell()
        piece = view[start:end]
        if not _keys_are_strings(piece, n):
            if pieces is None:
                pieces = [entries[:start]]
            fixed, n = _drop_non_string_keys(bytes(piece), skipped)
            pieces.append(fixed)
        elif pieces is not None:
            pieces.append(bytes(piece))
        kept += n
        start = end
    return (entries, kept) if pieces is None else (b"".join(pieces), kept)


# The EventTime of a canonical entry, as fixext8: seconds, then nanoseconds below 10^9 (3B9ACA00).
_EVENT_TIMES = re.compile(
    rb"(?:\xd7\x00.{4}(?:[\x00-\x3a].{3}|\x3b[\x00-\x99].{2}|\x3b\x9a[\x00-\xc9].))*",
    re.DOTALL,
)
_SMALLEST_ENTRY = 12  # bytes: fixarray(2), a fixext8 EventTime, an empty fixmap
_MSGPACK_DEPTH = 1024  # nesting levels msgpack's unpacker takes: an entry this long may hold more


def _canonical_as_sent(data: bytes, size: int) -> bool:
    """Are ``data`` exactly ``size`` entries, each already in the journal's form ([fixext8 EventTime,
    map of string keys])? Then they stand as sent, and C walks over them (msgspec's, then a regex
    over their times) replace the entry-by-entry scan: what Fluent Bit and Fluentd send (both give
    ``size``). A wrong ``size``, or any entry in another shape, is a no: the scan decides. Bounded:
    never more entries than the bytes could hold, nor than one slice.

    msgspec skips nesting of any depth, where the scan (and every msgpack reader after the
    journal) stops at msgpack's own limit; an entry of fewer bytes than that limit cannot nest so
    deep, so only payloads of such entries are taken here (a larger one costs the scan no more
    than these walks would)."""
    if not 0 < size <= min(_CHECK_SLICE, len(data) // _SMALLEST_ENTRY) or len(data) >= size * _MSGPACK_DEPTH:
        return False
    array = as_array(data, size)
    try:
        if max(map(len, _raw_items.decode(array))) >= _MSGPACK_DEPTH:
            return False
        entries = _check_entries.decode(array)
    except (msgspec.DecodeError, RecursionError):
        return False
    # Aligned by induction: a time that starts with d7 00 is 10 bytes, so the next block starts
    # the next entry's time; any other first bytes end the match.
    times = b"".join([t for t, _ in entries])
    return len(times) == 10 * size and _EVENT_TIMES.fullmatch(times) is not None


def _keys_are_strings(entries: bytes | memoryview, count: int) -> bool:
    try:
        _check_entries.decode(as_array(entries, count))
    except (msgspec.DecodeError, RecursionError):
        return False
    return True


def _drop_non_string_keys(entries: bytes, skipped: Skipped) -> tuple[bytes, int]:
    u = _unpacker_of(entries)
    kept: list[bytes] = []
    start = 0
    while start < len(entries):
        u.skip()
        end = u.tell()
        entry = entries[start:end]
        try:
            _check_entry.decode(entry)
            kept.append(entry)
        except msgspec.ValidationError:
            skipped.add("a key of a record is not a string")
        except RecursionError:
            kept.append(entry)  # within the unpacker's depth limit: deep, not invalid
        start = end
    return b"".join(kept), len(kept)


def _unpacker_of(entries: bytes) -> msgpack.Unpacker:
    u = msgpack.Unpacker(max_buffer_size=max(len(entries), 1024), strict_map_key=False)
    u.feed(entries)
    return u


def _close_run(pieces: list[bytes], mv: memoryview, start: int, stop: int) -> None:
    if stop > start:
        whole = mv.obj if start == 0 and stop == len(mv) else None
        # A payload all canonical is taken as it is, not copied.
        pieces.append(whole if isinstance(whole, bytes) else bytes(mv[start:stop]))
