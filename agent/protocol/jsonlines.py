"""JSON lines: bytes in, complete lines and records out. No I/O, no clock.

Invariants (what the tail input's position file relies on):

* Only lines ended by ``\\n`` leave the splitter. The bytes after the last
  newline stay buffered, and :attr:`LineSplitter.consumed` — the file offset
  up to which every line has been handed out — never points inside a line,
  so a position saved there resumes on a line start.
* A line longer than ``max_line_size`` is never held in memory: once the
  buffered part passes the limit its bytes are counted and dropped until its
  newline arrives, and it is handed out as one :class:`TooLong` (offset,
  length, the first bytes) for the dead-letter store.
* Each line must be one JSON object. A line that is not JSON, or is JSON but
  not an object, is reported with its offset and the reason; the other lines
  of the batch are unaffected. Invalid UTF-8 is replaced (U+FFFD) and
  counted, never fatal. Empty and blank lines are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from agent.protocol.event_time import EVENT_TIME_EXT, event_time_payload

HEAD_BYTES = 1024  # how much of an overlong line the dead letter keeps


@dataclass(slots=True)
class TooLong:
    offset: int
    length: int
    head: bytes


@dataclass(slots=True)
class BadLine:
    offset: int
    reason: str
    text: str


class LineSplitter:
    """Cut a byte stream (one file, read from ``offset``) into complete lines."""

    def __init__(self, offset: int = 0, max_line_size: int = 1 << 20):
        self.consumed = offset  # file offset after the last line handed out
        self.max_line_size = max_line_size
        self._partial = b""
        self._skipping: TooLong | None = None  # an overlong line being dropped

    @property
    def buffered(self) -> int:
        """Bytes read past :attr:`consumed` (held, or dropped as part of an overlong line)."""
        return len(self._partial) + (self._skipping.length if self._skipping else 0)

    def reset(self, offset: int) -> None:
        """Start again at ``offset`` (the file was truncated): drop what is buffered."""
        self.consumed = offset
        self._partial = b""
        self._skipping = None

    def feed(self, data: bytes) -> tuple[int, bytes | list[bytes | TooLong]]:
        """Return (offset of the first line, the complete lines).

        The common case comes back as one ``bytes`` region of whole lines, each
        ended by its newline, so the parser can take them in one call; when an
        overlong line is involved, as a list of lines without their newlines,
        the overlong ones as :class:`TooLong`.
        """
        out: list[bytes | TooLong] = []
        start = self.consumed
        if self._skipping is not None:
            nl = data.find(b"\n")
            skip = self._skipping
            if nl < 0:
                skip.length += len(data)
                return start, out
            skip.length += nl + 1
            out.append(skip)
            self._skipping = None
            self.consumed += skip.length
            data = data[nl + 1 :]
        buf = self._partial + data if self._partial else data
        last = buf.rfind(b"\n")
        if last < 0:
            self._hold(buf)
            return start, out
        region = buf[: last + 1]
        self.consumed += last + 1
        self._hold(buf[last + 1 :])
        if last > self.max_line_size and self._has_long_line(region):
            out.extend(self._mark_long(region[:-1].split(b"\n"), self.consumed - last - 1))
            return start, out
        if out:
            out.extend(region[:-1].split(b"\n"))
            return start, out
        return start, region

    def _has_long_line(self, region: bytes) -> bool:
        """Is any line of ``region`` longer than the limit? A jump of about the limit per step, in C."""
        limit = self.max_line_size
        pos, end = 0, len(region)
        while end - pos > limit:
            nl = region.rfind(b"\n", pos, pos + limit + 1)
            if nl < 0:
                return True
            pos = nl + 1
        return False

    def _hold(self, rest: bytes) -> None:
        if len(rest) > self.max_line_size:
            self._skipping = TooLong(self.consumed, len(rest), rest[:HEAD_BYTES])
            self._partial = b""
        else:
            self._partial = rest

    def _mark_long(self, lines: list[bytes], offset: int) -> list[bytes | TooLong]:
        marked: list[bytes | TooLong] = []
        for line in lines:
            if len(line) > self.max_line_size:
                marked.append(TooLong(offset, len(line) + 1, line[:HEAD_BYTES]))
            else:
                marked.append(line)
            offset += len(line) + 1
        return marked


@dataclass(slots=True)
class Parsed:
    records: list[dict[str, Any]]
    bad: list[BadLine]
    invalid_utf8: int = 0


def parse_lines(lines: bytes | list[bytes | TooLong], offset: int) -> Parsed:
    """Each line → one JSON object. ``offset`` is the file offset of the first line.

    ``lines`` is what :meth:`LineSplitter.feed` returns: a region of whole
    lines, or a list of lines.
    """
    if isinstance(lines, bytes):
        # The common case in one call: the region as a JSON array. It counts
        # only when it yields exactly one object per line (a line holding two
        # values, or none, makes the count or the parse fail); anything else
        # goes line by line.
        try:
            records = _decode_array(b"[" + lines[:-1].replace(b"\n", b",") + b"]")
        except (msgspec.DecodeError, UnicodeDecodeError):
            pass
        else:
            if len(records) == lines.count(b"\n") and set(map(type, records)) <= {dict}:
                return Parsed(records, [])
    return parse_each(lines, offset)


_decode_array = msgspec.json.Decoder(list).decode


def parse_each(lines: bytes | list[bytes | TooLong], offset: int) -> Parsed:
    """Line by line: the slow path, which says what is wrong with each bad line. Integers are
    read exactly (orjson reads one past 64 bits as a float: a uid of 2^64 would have reached the
    outputs as 1.8446744073709552e+19), and a line holding one msgpack cannot hold is refused."""
    items: list[bytes] | list[bytes | TooLong] = lines[:-1].split(b"\n") if isinstance(lines, bytes) else lines
    parsed = Parsed([], [])
    for line in items:
        if isinstance(line, TooLong):
            parsed.bad.append(
                BadLine(line.offset, f"line_too_long: {line.length} bytes", line.head.decode("utf-8", "replace"))
            )
            offset += line.length
            continue
        here, offset = offset, offset + len(line) + 1
        if not line.strip():
            continue
        try:
            record = _decode_line(line)
        except msgspec.DecodeError as exc:
            try:
                text = line.decode()
            except UnicodeDecodeError:
                text = line.decode("utf-8", "replace")
                try:
                    record = _decode_line(text.encode())
                except msgspec.DecodeError as again:
                    parsed.bad.append(BadLine(here, f"invalid_json: {again}", text))
                    continue
                parsed.invalid_utf8 += 1
            else:
                parsed.bad.append(BadLine(here, f"invalid_json: {exc}", text))
                continue
        if type(record) is not dict:
            parsed.bad.append(
                BadLine(here, f"not_an_object: a JSON {type(record).__name__}", line.decode("utf-8", "replace"))
            )
            continue
        if _beyond_64_bits(record):
            parsed.bad.append(
                BadLine(
                    here,
                    "integer_out_of_range: an integer beyond 64 bits, which the journal (msgpack) cannot hold",
                    line.decode("utf-8", "replace"),
                )
            )
            continue
        parsed.records.append(record)
    return parsed


_decode_line = msgspec.json.Decoder().decode
_INT_RANGE = (-(1 << 63), (1 << 64) - 1)  # what msgpack holds: int64 and uint64


def _beyond_64_bits(value: Any) -> bool:
    if type(value) is int:
        return not _INT_RANGE[0] <= value <= _INT_RANGE[1]
    if type(value) is dict:
        return any(_beyond_64_bits(v) for v in value.values())
    if type(value) is list:
        return any(_beyond_64_bits(v) for v in value)
    return False


_encode = msgspec.msgpack.Encoder().encode


def to_entries(records: list[dict[str, Any]], time_ns: int) -> bytes:
    """Forward-protocol entries ``[EventTime, record]``, concatenated, all stamped ``time_ns``.

    Raises OverflowError for an integer beyond 64 bits (msgpack has none;
    :func:`parse_each` rejects such lines).
    """
    n = len(records)
    if not n:
        return b""
    stamp = msgspec.msgpack.Ext(EVENT_TIME_EXT, event_time_payload(time_ns))
    packed = _encode([(stamp, record) for record in records])
    return packed[1 if n < 16 else 3 if n < 65536 else 5 :]  # without the array header
