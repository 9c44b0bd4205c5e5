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

The package's rooms: frames (what the decoder yields), entries (checking and
canonicalising ``[time, record]`` entries), compression, decoder (framing and
the modes), handshake (server side) and client (the forward output's side).
"""

from agent.protocol.event_time import EVENT_TIME_EXT, pack_event_time, unpack_event_time
from agent.protocol.forward.client import Helo, check_pong, packed_forward, parse_helo, ping
from agent.protocol.forward.compression import decompress, gunzip, unzstd
from agent.protocol.forward.decoder import (
    DEFAULT_MAX_DECOMPRESSED_SIZE,
    DEFAULT_MAX_FRAME_SIZE,
    ForwardDecoder,
    ack_bytes,
    costly,
    parse_frame,
)
from agent.protocol.forward.entries import array_items, scan_entries
from agent.protocol.forward.frames import (
    COSTLY_FRAME,
    MAX_INVALID_ENTRIES,
    SIGNAL_LOGS,
    EventBatch,
    Frame,
    Heartbeat,
    Ping,
    Skipped,
)
from agent.protocol.forward.handshake import check_ping, helo, password_digest, pong, shared_key_digest

__all__ = [
    "COSTLY_FRAME",
    "DEFAULT_MAX_DECOMPRESSED_SIZE",
    "DEFAULT_MAX_FRAME_SIZE",
    "EVENT_TIME_EXT",
    "MAX_INVALID_ENTRIES",
    "SIGNAL_LOGS",
    "EventBatch",
    "ForwardDecoder",
    "Frame",
    "Heartbeat",
    "Helo",
    "Ping",
    "Skipped",
    "ack_bytes",
    "array_items",
    "check_ping",
    "check_pong",
    "costly",
    "decompress",
    "gunzip",
    "helo",
    "pack_event_time",
    "packed_forward",
    "parse_frame",
    "parse_helo",
    "password_digest",
    "ping",
    "pong",
    "scan_entries",
    "shared_key_digest",
    "unpack_event_time",
    "unzstd",
]
