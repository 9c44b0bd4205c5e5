"""EventTime: the one form an event's time takes inside the agent, and its msgpack forms.

Inside the agent an event's time is an ``int`` of nanoseconds since the epoch
(:data:`EventTimeNs`), from the moment a decoder reads it to the moment an
encoder writes it. On the wire and in the journal it is the Forward
protocol's EventTime: msgpack ext type 0 of 8 bytes, uint32 seconds then
uint32 nanoseconds. Each msgpack library hands that ext over in its own
wrapper (msgspec's ``Ext``, msgpack's ``ExtType``, or the raw 8 bytes in an
ext hook); :func:`ns_of` turns any of them into nanoseconds, and only this
module knows the layout.
"""

from __future__ import annotations

import struct

EVENT_TIME_EXT = 0
NANOS = 1_000_000_000
_EVENT_TIME = struct.Struct(">II")

# An event's time inside the agent: nanoseconds since the epoch.
EventTimeNs = int


def pack_event_time(time_ns: EventTimeNs) -> bytes:
    """EventTime as msgpack fixext8, ext type 0: uint32 seconds, uint32 nanoseconds."""
    seconds, nanos = divmod(time_ns, NANOS)
    return b"\xd7\x00" + _EVENT_TIME.pack(seconds, nanos)


def event_time_payload(time_ns: EventTimeNs) -> bytes:
    """The 8 bytes inside the ext (for a library's own ext wrapper)."""
    seconds, nanos = divmod(time_ns, NANOS)
    return _EVENT_TIME.pack(seconds, nanos)


# The payload → (seconds, nanoseconds), for a renderer that formats the two apart.
seconds_and_nanos = _EVENT_TIME.unpack


def unpack_event_time(data: bytes | memoryview) -> EventTimeNs:
    """The 8-byte EventTime ext payload → nanoseconds since the epoch."""
    seconds: int
    nanos: int
    seconds, nanos = _EVENT_TIME.unpack(data)
    return seconds * NANOS + nanos


def ns_of(value: object) -> EventTimeNs:
    """An event time as a decoder gave it: an EventTime ext in any library's wrapper, or whole
    seconds. Raises ValueError for anything else."""
    data = getattr(value, "data", None)  # msgspec's Ext and msgpack's ExtType both have .code and .data
    if data is not None and getattr(value, "code", None) == EVENT_TIME_EXT and len(data) == 8:
        return unpack_event_time(data)
    if isinstance(value, int) and not isinstance(value, bool):
        return value * NANOS
    raise ValueError(f"{value!r:.60} is not an event time")
