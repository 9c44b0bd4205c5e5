"""The frames the decoder yields, and why entries of a frame were skipped."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.errors import ProtocolError

# fluent_signal (v1.5): 0 logs, 1 metrics, 2 traces.
SIGNAL_LOGS = 0

COSTLY_FRAME = 1 << 20  # bytes: above this a frame is parsed off the event loop
MAX_INVALID_ENTRIES = 10_000  # in one frame: past this the frame is hostile, not a sender's slip


class Skipped:
    """Why entries were skipped: the first KEEP reasons and how many in all. A frame of millions
    of invalid entries costs no memory per entry (each used to keep its own reason)."""

    KEEP = 10
    __slots__ = ("reasons", "count")

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.count = 0

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
    entries: bytes  # concatenated msgpack [EventTime, map] pairs ("" when they are in ``parts``)
    count: int
    chunk: bytes | None = None  # raw msgpack bytes of the chunk option
    skipped: Skipped = field(default_factory=Skipped)  # why invalid entries were left out
    signal: int = SIGNAL_LOGS
    mode: str = "forward"
    size: int = 0  # bytes of the frame on the wire
    # The journal records the entries become: one, unless the frame holds more than a record's
    # bounds (agent/protocol/forward/entries.py, split_entries).
    parts: list[tuple[bytes, int]] = field(default_factory=list)

    def records(self) -> list[tuple[bytes, int]]:
        return self.parts or [(self.entries, self.count)]


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

# A PING is a 6-element array whose first element is "PING", as a fixstr or a str8; clients pack
# the array as a fixarray, and msgpack allows array 16 and 32 headers for it too.
_SIX = (b"\x96", b"\xdc\x00\x06", b"\xdd\x00\x00\x00\x06")
_PING_TAGS = (b"\xa4PING", b"\xd9\x04PING")
PING_PREFIXES = tuple(head + tag for head in _SIX for tag in _PING_TAGS)


def is_ping(frame: bytes) -> bool:
    """Does this whole top-level object (or the start of one) begin as a PING does?"""
    return frame.startswith(PING_PREFIXES)


def may_be_ping(start: bytes) -> bool:
    """Could a stream that begins with ``start`` be a PING? (True for a prefix of one.)"""
    return any(prefix.startswith(start[: len(prefix)]) for prefix in PING_PREFIXES)
