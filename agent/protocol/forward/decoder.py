"""The incremental decoder: bytes in, frames out; and the parsing of one frame."""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from agent.errors import ProtocolError
from agent.protocol.forward.compression import decompress
from agent.protocol.forward.entries import (
    MAX_RECORD_BYTES,
    MAX_RECORD_ENTRIES,
    MSGPACK_ERRORS,
    is_array,
    is_map,
    is_raw,
    kind_of,
    scan_entries,
    split_entries,
)
from agent.protocol.forward.frames import COSTLY_FRAME, HEARTBEAT, SIGNAL_LOGS, EventBatch, Frame, Ping, is_ping

DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024
DEFAULT_MAX_DECOMPRESSED_SIZE = 64 * 1024 * 1024
_FEED_PIECE = 256 * 1024
# A chunk id is echoed in its ack: Fluentd's and Fluent Bit's are 16 random bytes in base64 (24
# characters), a UUID is 36. Longer ones would let a peer make every ack as large as it likes.
MAX_CHUNK_ID_BYTES = 128


def ack_bytes(chunk_raw: bytes) -> bytes:
    """``{"ack": <chunk>}`` with the chunk value spliced in exactly as it arrived."""
    return b"\x81\xa3ack" + chunk_raw


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
            except MSGPACK_ERRORS as exc:
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
    if not is_array(b0):
        raise ProtocolError(f"top-level object is {kind_of(b0)}, not an array")
    u = msgpack.Unpacker(raw=True, max_buffer_size=max(len(frame), 1024), strict_map_key=False)
    u.feed(frame)
    try:
        return _parse_message(u, frame, now_ns, max_decompressed_size)
    except (msgpack.OutOfData, IndexError):
        raise ProtocolError("message is truncated") from None
    except MSGPACK_ERRORS as exc:
        raise ProtocolError(f"invalid msgpack in message: {exc}") from None
    except (TypeError, KeyError, OverflowError, UnicodeError, RecursionError, MemoryError) as exc:
        # A shape msgpack accepts and the protocol does not (an array as a map key in the
        # options, say): the peer's error, one line, never an unhandled exception.
        raise ProtocolError(f"invalid message: {type(exc).__name__}: {exc}"[:300]) from None


def _parse_message(u: msgpack.Unpacker, frame: bytes, now_ns: int, max_decompressed: int) -> Frame:
    n = u.read_array_header()
    tag_byte = frame[u.tell()]
    if n == 6 and is_ping(frame):
        u.skip()
        fields = [u.unpack() for _ in range(5)]
        if not all(isinstance(f, bytes) for f in fields):
            raise ProtocolError("PING fields are not strings")
        return Ping(*fields)
    if not 2 <= n <= 4:
        raise ProtocolError(f"message has {n} elements; expected 2 to 4")
    if not (0xA0 <= tag_byte <= 0xBF or 0xD9 <= tag_byte <= 0xDB):
        raise ProtocolError(f"tag is {kind_of(tag_byte)}, not a string")
    try:
        tag = u.unpack().decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("tag is not valid UTF-8") from None
    if not tag:
        raise ProtocolError("tag is empty")
    pos = u.tell()
    b1 = frame[pos]

    if is_array(b1):  # Forward mode: [tag, [[time, record], ...], option?]
        count = u.read_array_header()
        entries_start = u.tell()
        entries, good, skipped = scan_entries(frame, now_ns, count=count, start=entries_start, unpacker=u)
        options = _read_options(u, frame, n - 2)
        mode = "forward"
    elif is_raw(b1):  # PackedForward / CompressedPackedForward
        payload = u.unpack()
        options = _read_options(u, frame, n - 2)
        magic = payload[:2] == b"\x1f\x8b" or payload[:4] == b"\x28\xb5\x2f\xfd"  # gzip, zstd
        if options.compressed not in (None, b"text", b"") or magic:
            payload = decompress(payload, options.compressed, max_decompressed)
            mode = "compressed_packed_forward"
        else:
            mode = "packed_forward"
        entries, good, skipped = scan_entries(payload, now_ns, size=options.size)
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
    parts = split_entries(entries, good) if good > MAX_RECORD_ENTRIES or len(entries) > MAX_RECORD_BYTES else []
    return EventBatch(
        tag=tag,
        entries=b"" if parts else entries,  # held once: in the parts when there are parts
        count=good,
        parts=parts,
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
    size: int | None = None  # entries in a packed payload, as its sender counts them: a hint


def _read_options(u: msgpack.Unpacker, frame: bytes, present: int) -> _Options:
    opts = _Options()
    if present <= 0:
        return opts
    b = frame[u.tell()]
    if b == 0xC0:
        u.skip()
        return opts
    if not is_map(b):
        raise ProtocolError(f"option is {kind_of(b)}, not a map")
    for _ in range(u.read_map_header()):
        key = u.unpack()
        vstart = u.tell()
        value = u.unpack()
        if key == b"chunk":
            if u.tell() - vstart > MAX_CHUNK_ID_BYTES:
                raise ProtocolError(f"chunk id of {u.tell() - vstart} bytes (at most {MAX_CHUNK_ID_BYTES})")
            opts.chunk = frame[vstart : u.tell()]
        elif key == b"compressed" and isinstance(value, bytes):
            opts.compressed = value
        elif key == b"fluent_signal" and isinstance(value, int):
            opts.signal = value
        elif key == b"size" and type(value) is int:
            opts.size = value
    return opts
