"""Forward Protocol v1 and v1.5, server side, as a pure incremental codec.

Spec: github.com/fluent/fluentd/wiki/Forward-Protocol-Specification-v1 and
fluent/forward-protocol "Forward-Protocol-Specification-v1.5.md". Nothing here
touches a socket, a file or a clock: bytes go in, frames come out; the caller
passes "now" so that time 0 / nil can be replaced (Fluentd does the same).

Rules this module enforces (the invariants the rest of the agent relies on):

* A frame is one top-level msgpack object. ``nil`` is a heartbeat. Anything
  that is not an array, a tag that is not a string, or bytes that are not
  msgpack are fatal (:class:`ProtocolError` with ``fatal=True``): the caller
  closes that connection and nothing else.
* The modes are told apart by the type of element [1]: Message (time),
  Forward (array of entries), PackedForward (bin *or* str: Fluentd sends str32
  holding non-UTF-8 bytes) and CompressedPackedForward (gzip, several members
  allowed; zstd; ``compressed: "text"`` means not compressed).
* Every entry is validated without decoding its record into Python objects
  (``Unpacker.skip`` plus a one-byte type peek): that is what makes ingest
  several times cheaper than a full decode. An invalid entry (not an array,
  bad time, record not a map) is skipped and reported, the rest go on, as
  Fluentd >= 1.19 does with ``skip_invalid_event``.
* Entries leave the codec in one canonical form, ``[EventTime, {record}]``
  concatenated (the PackedForward payload): EventTime as fixext8 or ext8 type
  0, nanoseconds kept. Integer, float, nil/0 ("now") and v1.5's
  ``[time, {metadata}]`` times are rewritten into it; the record bytes are
  copied untouched. Entries that are already canonical are copied as runs.
* The ``chunk`` option is kept as its raw msgpack bytes so the ack echoes the
  value byte for byte (Fluentd's chunk ends in "\\n"; clients compare exactly).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import zlib
from dataclasses import dataclass, field

import msgpack
import msgspec

from agent.errors import ProtocolError

EVENT_TIME_EXT = 0
_NS = 1_000_000_000
_EVENT_TIME = struct.Struct(">II")
_MSGPACK_ERRORS = (ValueError, msgpack.FormatError, msgpack.StackError, msgpack.ExtraData)

DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024
DEFAULT_MAX_DECOMPRESSED_SIZE = 64 * 1024 * 1024
_FEED_PIECE = 256 * 1024

# fluent_signal (v1.5): 0 logs, 1 metrics, 2 traces.
SIGNAL_LOGS = 0


def pack_event_time(time_ns: int) -> bytes:
    """EventTime as msgpack fixext8, ext type 0: uint32 seconds, uint32 nanoseconds."""
    seconds, nanos = divmod(time_ns, _NS)
    return b"\xd7\x00" + _EVENT_TIME.pack(seconds, nanos)


def unpack_event_time(data: bytes | memoryview) -> int:
    """The 8-byte EventTime ext payload → nanoseconds since the epoch."""
    seconds: int
    nanos: int
    seconds, nanos = _EVENT_TIME.unpack(data)
    return seconds * _NS + nanos


def array_items(data: bytes) -> bytes:
    """The concatenated items of an encoded msgpack array (its header dropped): entries."""
    b = data[0]
    return data[1:] if b < 0xDC else data[3:] if b == 0xDC else data[5:]


def ack_bytes(chunk_raw: bytes) -> bytes:
    """``{"ack": <chunk>}`` with the chunk value spliced in exactly as it arrived."""
    return b"\x81\xa3ack" + chunk_raw


# ---------------------------------------------------------------------------
# Frames


COSTLY_FRAME = 1 << 20  # bytes: above this a frame is parsed off the event loop
MAX_INVALID_ENTRIES = 10_000  # in one frame: past this the frame is hostile, not a sender's slip


class Skipped:
    """Why entries were skipped: the first KEEP reasons and how many in all. A frame of millions
    of invalid entries costs no memory per entry (each used to keep its own reason)."""

    KEEP = 10
    __slots__ = ("reasons", "count", "non_string_keys")

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.count = 0
        self.non_string_keys = 0  # of the count: records refused for a key that is not a string

    def add(self, reason: str, *args: object) -> None:
        """One more; ``reason % args`` is formatted only for the ones kept."""
        self.count += 1
        if len(self.reasons) < self.KEEP:
            self.reasons.append(reason % args if args else reason)
        elif self.count > MAX_INVALID_ENTRIES:
            raise ProtocolError(
                f"more than {MAX_INVALID_ENTRIES} invalid entries in one message (first: {self.reasons[0]})"
            )

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> str:
        return self.reasons[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Skipped):
            return self.count == other.count and self.reasons == other.reasons
        return isinstance(other, list) and len(self) == len(other) and self.reasons == other[: self.KEEP]


@dataclass(slots=True)
class EventBatch:
    """The events of one message, canonical and ready for the journal."""

    tag: str
    entries: bytes  # concatenated msgpack [EventTime, map] pairs
    count: int
    chunk: bytes | None = None  # raw msgpack bytes of the chunk option
    skipped: Skipped = field(default_factory=Skipped)  # why invalid entries were left out
    signal: int = SIGNAL_LOGS
    mode: str = "forward"
    size: int = 0  # bytes of the frame on the wire


@dataclass(slots=True)
class Heartbeat:
    """A bare ``nil`` object: a client checking the connection."""


@dataclass(slots=True)
class Ping:
    """``["PING", hostname, shared_key_salt, hexdigest, username, password]``."""

    hostname: bytes
    shared_key_salt: bytes
    digest: bytes
    username: bytes
    password: bytes


Frame = EventBatch | Heartbeat | Ping
HEARTBEAT = Heartbeat()


def _kind(first_byte: int) -> str:
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


def _is_map(b: int) -> bool:
    return 0x80 <= b <= 0x8F or b == 0xDE or b == 0xDF


def _is_array(b: int) -> bool:
    return 0x90 <= b <= 0x9F or b == 0xDC or b == 0xDD


def _is_raw(b: int) -> bool:
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
        return value * _NS if value else now_ns
    if isinstance(value, float):
        if not 0.0 <= value < 4294967296.0:
            return None
        return round(value * _NS) if value else now_ns
    if isinstance(value, msgpack.ExtType):
        if value.code == EVENT_TIME_EXT and len(value.data) == 8:
            ns = unpack_event_time(value.data)
            return ns if ns else now_ns
        return None
    return None


# ---------------------------------------------------------------------------
# Entries


def scan_entries(
    data: bytes, now_ns: int, count: int | None = None, start: int = 0, unpacker: msgpack.Unpacker | None = None
) -> tuple[bytes, int, Skipped]:
    """Validate and canonicalize concatenated ``[time, record]`` entries.

    ``data`` holds the entries from ``start`` (a packed payload, or a whole
    Forward frame positioned at its first entry, in which case ``unpacker``
    is the frame's unpacker and ``count`` the array length). Returns the
    canonical entries, how many there are, and a reason per skipped entry.
    """
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
            if b == 0x92 and data[pos + 1] == 0xD7 and data[pos + 2] == EVENT_TIME_EXT:
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
            if not _is_array(b):
                u.skip()
                _close_run(pieces, mv, run_start, pos)
                run_start = u.tell()
                skipped.add("entry %d is %s, not [time, record]", index, _kind(b))
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
            if (tb == 0xD7 and data[time_pos + 1] == EVENT_TIME_EXT) or (
                tb == 0xC7 and data[time_pos + 1] == 8 and data[time_pos + 2] == EVENT_TIME_EXT
            ):
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
            if not _is_map(rb):
                _close_run(pieces, mv, run_start, pos)
                run_start = u.tell()
                skipped.add("entry %d: record is %s, not a map", index, _kind(rb))
                continue
            if not fast and canonical_time is None:
                _close_run(pieces, mv, run_start, pos)
                run_start = u.tell()
                skipped.add("entry %d: time is %s, not an EventTime or integer seconds", index, _kind(tb))
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
        except _MSGPACK_ERRORS as exc:
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
    refused_before = skipped.non_string_keys
    if count <= _CHECK_SLICE:
        if not _keys_are_strings(entries, count):
            entries = _drop_non_string_keys(entries, skipped)
        return entries, count - (skipped.non_string_keys - refused_before)
    u = _unpacker_of(entries)
    kept: list[bytes] = []
    start = 0
    for first in range(0, count, _CHECK_SLICE):
        n = min(_CHECK_SLICE, count - first)
        for _ in range(n):
            u.skip()
        end = u.tell()
        piece = entries[start:end]
        kept.append(piece if _keys_are_strings(piece, n) else _drop_non_string_keys(piece, skipped))
        start = end
    return b"".join(kept), count - (skipped.non_string_keys - refused_before)


def _keys_are_strings(entries: bytes, count: int) -> bool:
    try:
        _check_entries.decode(b"\xdd" + count.to_bytes(4, "big") + entries)
    except (msgspec.DecodeError, RecursionError):
        return False
    return True


def _drop_non_string_keys(entries: bytes, skipped: Skipped) -> bytes:
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
            skipped.non_string_keys += 1
            skipped.add("a key of a record is not a string")
        except RecursionError:
            kept.append(entry)  # within the unpacker's depth limit: deep, not invalid
        start = end
    return b"".join(kept)


def _unpacker_of(entries: bytes) -> msgpack.Unpacker:
    u = msgpack.Unpacker(max_buffer_size=max(len(entries), 1024), strict_map_key=False)
    u.feed(entries)
    return u


def _close_run(pieces: list[bytes], mv: memoryview, start: int, stop: int) -> None:
    if stop > start:
        pieces.append(bytes(mv[start:stop]))


# ---------------------------------------------------------------------------
# Decompression (bounded: a decompression bomb is a fatal protocol error)


def gunzip(payload: bytes, limit: int) -> bytes:
    """Decompress one or more concatenated gzip members, at most ``limit`` bytes."""
    out = bytearray()
    data = payload
    while data:
        d = zlib.decompressobj(31)
        pending = data
        while True:
            try:
                out += d.decompress(pending, limit - len(out) + 1)
            except zlib.error as exc:
                raise ProtocolError(f"invalid gzip payload: {exc}") from None
            if len(out) > limit:
                raise ProtocolError(f"decompressed payload exceeds {limit} bytes")
            pending = d.unconsumed_tail
            if d.eof or not pending:
                break
        if not d.eof:
            raise ProtocolError("truncated gzip payload")
        data = d.unused_data.lstrip(b"\x00")
    return bytes(out)


def unzstd(payload: bytes, limit: int) -> bytes:
    """Decompress zstd frames, at most ``limit`` bytes."""
    import zstandard

    try:
        reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(payload), read_across_frames=True)
        out = reader.read(limit + 1)
    except zstandard.ZstdError as exc:
        raise ProtocolError(f"invalid zstd payload: {exc}") from None
    if len(out) > limit:
        raise ProtocolError(f"decompressed payload exceeds {limit} bytes")
    return out


def decompress(payload: bytes, method: bytes | None, limit: int) -> bytes:
    # Fluent Bit trusts magic bytes over the option; a canonical entry starts with
    # an array header, so these magics can never be uncompressed entries.
    if method == b"gzip" or (method is None and payload[:2] == b"\x1f\x8b"):
        return gunzip(payload, limit)
    if method == b"zstd" or (method is None and payload[:4] == b"\x28\xb5\x2f\xfd"):
        return unzstd(payload, limit)
    if method in (None, b"text", b""):
        return payload
    raise ProtocolError(f"unsupported compression {method!r}")


# ---------------------------------------------------------------------------
# The incremental decoder


class ForwardDecoder:
    """Turns a byte stream into frames. ``feed`` returns only complete frames.

    The decoder keeps the partial tail between calls and raises a fatal
    :class:`ProtocolError` once that tail grows past ``max_frame_size``.
    """

    def __init__(
        self,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_decompressed_size: int = DEFAULT_MAX_DECOMPRESSED_SIZE,
    ):
        self.max_frame_size = max_frame_size
        self.max_decompressed_size = max_decompressed_size
        # msgpack's Unpacker allocates a 1 MiB buffer up front: it exists only while a frame is
        # incomplete, so an idle connection holds none (thousands of them held gigabytes).
        self._framer: msgpack.Unpacker | None = None
        self._buf = bytearray()
        self._base = 0  # stream offset of self._buf[0]

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buf)

    def feed(self, data: bytes, now_ns: int) -> list[Frame]:
        """The complete frames in ``data`` (and what came before it), parsed."""
        return [parse_frame(frame, now_ns, self.max_decompressed_size) for frame in self.split(data)]

    def split(self, data: bytes) -> list[bytes]:
        """The complete frames in ``data`` (and what came before it), as their bytes."""
        frames: list[bytes] = []
        for i in range(0, len(data), _FEED_PIECE):
            piece = data[i : i + _FEED_PIECE]
            if self._framer is None:
                # read_size: the buffer it starts with (1 MiB when not given), grown as frames need.
                self._framer = msgpack.Unpacker(
                    raw=True, read_size=16 * 1024, max_buffer_size=self.max_frame_size + 2 * _FEED_PIECE
                )
                self._base = 0
            self._buf += piece
            self._framer.feed(piece)
            self._split(frames)
            if len(self._buf) > self.max_frame_size:
                raise ProtocolError(f"frame larger than max_frame_size ({self.max_frame_size} bytes)")
        if not self._buf:
            self._framer = None  # nothing partial: the next bytes start a new framer
        return frames

    def _split(self, frames: list[bytes]) -> None:
        framer = self._framer
        assert framer is not None  # feed made one for these bytes
        start = self._base
        while True:
            try:
                framer.skip()
            except msgpack.OutOfData:
                break
            except _MSGPACK_ERRORS as exc:
                raise ProtocolError(f"invalid msgpack at stream byte {framer.tell()}: {exc}") from None
            end = framer.tell()
            if end - start > self.max_frame_size:
                raise ProtocolError(
                    f"frame of {end - start} bytes is larger than max_frame_size ({self.max_frame_size} bytes)"
                )
            frames.append(bytes(self._buf[start - self._base : end - self._base]))
            start = end
        if start > self._base:
            del self._buf[: start - self._base]
            self._base = start


def costly(frame: bytes) -> bool:
    """Would parsing this frame hold a thread for long? A compressed one may inflate to
    max_decompressed_size of entries, and a large one is many entries to scan."""
    return len(frame) > COSTLY_FRAME or b"\xaacompressed" in frame[-128:]


def parse_frame(frame: bytes, now_ns: int, max_decompressed_size: int = DEFAULT_MAX_DECOMPRESSED_SIZE) -> Frame:
    """One complete top-level msgpack object → a frame."""
    b0 = frame[0]
    if b0 == 0xC0:
        return HEARTBEAT
    if not _is_array(b0):
        raise ProtocolError(f"top-level object is {_kind(b0)}, not an array")
    u = msgpack.Unpacker(raw=True, max_buffer_size=max(len(frame), 1024), strict_map_key=False)
    u.feed(frame)
    try:
        return _parse_message(u, frame, now_ns, max_decompressed_size)
    except (msgpack.OutOfData, IndexError):
        raise ProtocolError("message is truncated") from None
    except _MSGPACK_ERRORS as exc:
        raise ProtocolError(f"invalid msgpack in message: {exc}") from None
    except (TypeError, KeyError, OverflowError, UnicodeError, RecursionError, MemoryError) as exc:
        # A shape msgpack accepts and the protocol does not (an array as a map key in the
        # options, say): the peer's error, one line, never an unhandled exception.
        raise ProtocolError(f"invalid message: {type(exc).__name__}: {exc}"[:300]) from None


def _parse_message(u: msgpack.Unpacker, frame: bytes, now_ns: int, max_decompressed: int) -> Frame:
    n = u.read_array_header()
    tag_byte = frame[u.tell()]
    at = u.tell()
    if n == 6 and (frame[at : at + 5] == b"\xa4PING" or frame[at : at + 6] == b"\xd9\x04PING"):  # fixstr or str8
        u.skip()
        fields = [u.unpack() for _ in range(5)]
        if not all(isinstance(f, bytes) for f in fields):
            raise ProtocolError("PING fields are not strings")
        return Ping(*fields)
    if not 2 <= n <= 4:
        raise ProtocolError(f"message has {n} elements; expected 2 to 4")
    if not (0xA0 <= tag_byte <= 0xBF or 0xD9 <= tag_byte <= 0xDB):
        raise ProtocolError(f"tag is {_kind(tag_byte)}, not a string")
    try:
        tag = u.unpack().decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("tag is not valid UTF-8") from None
    if not tag:
        raise ProtocolError("tag is empty")
    pos = u.tell()
    b1 = frame[pos]

    if _is_array(b1):  # Forward mode: [tag, [[time, record], ...], option?]
        count = u.read_array_header()
        entries_start = u.tell()
        entries, good, skipped = scan_entries(frame, now_ns, count=count, start=entries_start, unpacker=u)
        options = _read_options(u, frame, n - 2)
        mode = "forward"
    elif _is_raw(b1):  # PackedForward / CompressedPackedForward
        payload = u.unpack()
        options = _read_options(u, frame, n - 2)
        magic = payload[:2] == b"\x1f\x8b" or payload[:4] == b"\x28\xb5\x2f\xfd"  # gzip, zstd
        if options.compressed not in (None, b"text", b"") or magic:
            payload = decompress(payload, options.compressed, max_decompressed)
            mode = "compressed_packed_forward"
        else:
            mode = "packed_forward"
        entries, good, skipped = scan_entries(payload, now_ns)
    else:  # Message mode: [tag, time, record, option?]
        if n < 3:
            raise ProtocolError(f"message mode needs [tag, time, record]; got {n} elements")
        # Re-use the entry scanner on a synthetic 2-element entry so both paths
        # apply exactly the same time and record rules.
        u.skip()
        u.skip()
        entry = b"\x92" + frame[pos : u.tell()]
        entries, good, skipped = scan_entries(entry, now_ns)
        options = _read_options(u, frame, n - 3)
        mode = "message"
    return EventBatch(
        tag=tag,
        entries=entries,
        count=good,
        chunk=options.chunk,
        skipped=skipped,
        signal=options.signal,
        mode=mode,
        size=len(frame),
    )


@dataclass(slots=True)
class _Options:
    chunk: bytes | None = None
    compressed: bytes | None = None
    signal: int = SIGNAL_LOGS


def _read_options(u: msgpack.Unpacker, frame: bytes, present: int) -> _Options:
    opts = _Options()
    if present <= 0:
        return opts
    b = frame[u.tell()]
    if b == 0xC0:
        u.skip()
        return opts
    if not _is_map(b):
        raise ProtocolError(f"option is {_kind(b)}, not a map")
    for _ in range(u.read_map_header()):
        key = u.unpack()
        vstart = u.tell()
        value = u.unpack()
        if key == b"chunk":
            opts.chunk = frame[vstart : u.tell()]
        elif key == b"compressed" and isinstance(value, bytes):
            opts.compressed = value
        elif key == b"fluent_signal" and isinstance(value, int):
            opts.signal = value
    return opts


# ---------------------------------------------------------------------------
# Handshake (shared_key / users). Nonce and salts are passed in, so the code is
# pure and can be checked against captured sessions.


def _sha512_hex(*parts: bytes) -> bytes:
    h = hashlib.sha512()
    for p in parts:
        h.update(p)
    return h.hexdigest().encode()


def helo(nonce: bytes, auth_salt: bytes, keepalive: bool = True) -> bytes:
    message: bytes = msgpack.packb(
        ["HELO", {"nonce": nonce, "auth": auth_salt, "keepalive": keepalive}], use_bin_type=True
    )
    return message


def pong(ok: bool, reason: str, self_hostname: bytes, digest: bytes) -> bytes:
    # Fluentd packs the hostname and digest as str; so do we.
    message: bytes = msgpack.packb(
        ["PONG", ok, reason, self_hostname.decode("utf-8", "replace"), digest.decode("ascii")], use_bin_type=True
    )
    return message


def shared_key_digest(salt: bytes, hostname: bytes, nonce: bytes, shared_key: bytes) -> bytes:
    return _sha512_hex(salt, hostname, nonce, shared_key)


def password_digest(auth_salt: bytes, username: bytes, password: bytes) -> bytes:
    return _sha512_hex(auth_salt, username, password)


def check_ping(
    ping: Ping,
    *,
    nonce: bytes,
    auth_salt: bytes,
    shared_key: bytes,
    self_hostname: bytes,
    users: dict[bytes, bytes] | None = None,
) -> tuple[bool, str, bytes]:
    """Verify a PING; return (ok, reason, PONG bytes) as Fluentd's in_forward does."""
    if ping.hostname == self_hostname:
        reason = "same hostname between input and output: invalid configuration"
    elif ping.digest != shared_key_digest(ping.shared_key_salt, ping.hostname, nonce, shared_key):
        reason = "shared_key mismatch"
    elif users and (
        ping.username not in users or ping.password != password_digest(auth_salt, ping.username, users[ping.username])
    ):
        reason = "username/password mismatch"
    else:
        digest = shared_key_digest(ping.shared_key_salt, self_hostname, nonce, shared_key)
        return True, "", pong(True, "", self_hostname, digest)
    return False, reason, pong(False, reason, b"", b"")


# ---------------------------------------------------------------------------
# Client side (the forward output): messages, handshake, acks. Pure as well.


def packed_forward(tag: str, entries: bytes, count: int, chunk: str, *, compress: bool = False) -> bytes:
    """A PackedForward message (CompressedPackedForward with ``compress``) carrying ``chunk``."""
    payload = gzip.compress(entries, compresslevel=6, mtime=0) if compress else entries
    option = {"size": count, "chunk": chunk, "compressed": "gzip" if compress else "text"}
    parts: list[bytes] = [msgpack.packb(tag), msgpack.packb(payload, use_bin_type=True), msgpack.packb(option)]
    return b"\x93" + b"".join(parts)


@dataclass(slots=True)
class Helo:
    nonce: bytes
    auth_salt: bytes
    keepalive: bool


def parse_helo(message: object) -> Helo:
    """``["HELO", {nonce, auth, keepalive}]`` as decoded with raw=True."""
    if not (
        isinstance(message, (list, tuple))
        and len(message) == 2
        and message[0] == b"HELO"
        and isinstance(message[1], dict)
    ):
        raise ProtocolError(f"expected HELO, got {message!r:.80}")
    opts = message[1]
    nonce = opts.get(b"nonce")
    if not isinstance(nonce, bytes):
        raise ProtocolError("HELO has no nonce")
    auth = opts.get(b"auth", b"")
    return Helo(nonce, auth if isinstance(auth, bytes) else b"", bool(opts.get(b"keepalive", True)))


def ping(
    helo: Helo, *, hostname: bytes, shared_key: bytes, salt: bytes, username: bytes = b"", password: bytes = b""
) -> bytes:
    password_hex = password_digest(helo.auth_salt, username, password) if helo.auth_salt else b""
    fields = [hostname, salt, shared_key_digest(salt, hostname, helo.nonce, shared_key), username, password_hex]
    # As Fluentd does: every field a msgpack str (the salt is hex text there and here).
    packer = msgpack.Packer(unicode_errors="surrogateescape")
    message: bytes = packer.pack(["PING", *(f.decode("utf-8", "surrogateescape") for f in fields)])
    return message


def check_pong(message: object, *, helo: Helo, salt: bytes, shared_key: bytes, self_hostname: bytes) -> str | None:
    """None when the PONG authenticates the server, else the reason (Fluentd's out_forward checks)."""
    if not (isinstance(message, (list, tuple)) and len(message) == 5 and message[0] == b"PONG"):
        return f"expected PONG, got {message!r:.80}"
    _, ok, reason, server_hostname, digest = message
    if not ok:
        text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else reason
        return f"authentication refused by the server: {text}"
    if server_hostname == self_hostname:
        return "the server has the same hostname as this client (invalid configuration)"
    if digest != shared_key_digest(salt, server_hostname, helo.nonce, shared_key):
        return "the server's shared key digest does not match"
    return None
