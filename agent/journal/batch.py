"""What a journal record's payload decodes to: a :class:`TagBatch` of ``[time_ns, record]``
entries. Pure: bytes in, objects out.

msgspec decodes a whole batch in one call (its ext hook turns each EventTime into nanoseconds);
msgpack takes over for what msgspec refuses (invalid UTF-8, keys that are lists or maps).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import msgspec
import orjson

from agent.journal.record import batch_count, entries_array
from agent.protocol.event_time import EVENT_TIME_EXT, unpack_event_time


class TagBatch:
    """The events of one journal record: one tag, ``[time_ns, record]`` entries.

    Built from a journal payload, the entries are decoded on first use, so an
    output that can work from the payload itself (the file output renders it
    straight to JSON lines) never pays for a generic decode.
    """

    __slots__ = ("tag", "payload", "_entries")

    def __init__(self, tag: str, entries: list[Any] | None = None, payload: bytes | None = None):
        self.tag = tag
        self.payload = payload
        self._entries = entries

    @property
    def entries(self) -> list[Any]:
        if self._entries is None:
            if self.payload is None:
                raise ValueError("a TagBatch holds entries or a payload")
            self._entries = decode_entries(self.payload)[1]
        return self._entries

    def one_by_one(self) -> Iterator[tuple[Any, Any, Any]]:
        """``(time_ns, record, kept)`` per entry, each record decoded only when it is reached, and
        ``kept`` what to hold of it past that step: its msgpack (a ``msgspec.Raw`` that
        :func:`record_of` decodes again) where the payload reads so, else the record itself.

        For an output that looks at every record and keeps few of them (a mirror skips the test
        purchases): a batch of a thousand records is never in memory as objects all at once, and
        what a burst leaves in the allocator follows the most objects alive at one time."""
        pairs = self.raw_records()
        if pairs is not None:
            for time_ns, raw in pairs:
                yield time_ns, record_of(raw), raw
            return
        for time_ns, record in self.entries:
            yield time_ns, record, record

    def raw_records(self) -> list[tuple[Any, msgspec.Raw]] | None:
        """``(time_ns, record)`` per entry with each record left as its msgpack (a zero-copy
        ``msgspec.Raw`` of the payload); None where the entries are decoded already or the payload
        is not [time, record] pairs msgspec can walk (then :attr:`entries` reads it)."""
        if self._entries is not None or self.payload is None:
            return None
        try:
            pairs: list[tuple[Any, msgspec.Raw]] = _raw_entries.decode(entries_array(self.payload))
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        return pairs

    def __len__(self) -> int:
        if self._entries is None and self.payload is not None:
            return batch_count(self.payload)
        return len(self.entries)


def _ext_hook(code: int, data: memoryview) -> object:
    if code == EVENT_TIME_EXT and len(data) == 8:
        return unpack_event_time(data)
    return other_ext(code, data)


def other_ext(code: int, data: bytes | memoryview) -> object:
    """An ext value other than EventTime, as a record holds it. msgpack's ExtType takes only the
    application codes 0-127; a reserved negative one (a sender's, or a flipped byte) is kept as
    the same {"ext", "data"} the JSON renderers write."""
    if 0 <= code <= 127:
        return msgpack.ExtType(code, bytes(data))
    return {"ext": code, "data": bytes(data).hex()}


_decoder = msgspec.msgpack.Decoder(ext_hook=_ext_hook)
# The entries with each record left as its bytes (zero-copy views of the payload).
_raw_entries = msgspec.msgpack.Decoder(list[tuple[Any, msgspec.Raw]], ext_hook=_ext_hook)


def record_of(kept: Any) -> Any:
    """A record that :meth:`TagBatch.one_by_one` kept as its msgpack, decoded; anything else as it is."""
    if not isinstance(kept, msgspec.Raw):
        return kept
    try:
        return _decoder.decode(kept)
    except (msgspec.DecodeError, TypeError, ValueError):
        return lenient_decode(bytes(kept), _ext_hook)


def _pairs(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    """A map whose keys msgpack gives as lists or maps (JSON and Python dicts have no such keys):
    each such key becomes its JSON text."""
    out: dict[Any, Any] = {}
    for key, value in pairs:
        try:
            out[key] = value
        except TypeError:
            out[key_text(key)] = value
    return out


def key_text(key: object) -> str:
    """A map key that is no string (a list, a map), as its JSON text."""
    try:
        return orjson.dumps(key, default=json_default, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return repr(key)


def lenient_decode(payload: bytes, ext_hook: Callable[[int, memoryview], object]) -> list[Any]:
    """msgspec is strict (UTF-8 strings, plain keys); msgpack takes what senders send."""
    decoded: list[Any] = msgpack.unpackb(
        payload, raw=False, strict_map_key=False, unicode_errors="replace", ext_hook=ext_hook, object_pairs_hook=_pairs
    )
    return decoded


def tag_and_entries(decoded: list[Any]) -> tuple[str, list[Any]]:
    # [tag, entries], or [tag, target, entries] for a batch meant for one output.
    return decoded[0], decoded[-1]


def decode_entries(payload: bytes) -> tuple[str, list[Any]]:
    """A journal payload ``[tag, [[EventTime, record], ...]]`` → (tag, [[time_ns, record], ...])."""
    try:
        return tag_and_entries(_decoder.decode(payload))
    except (msgspec.DecodeError, TypeError, ValueError):
        return tag_and_entries(lenient_decode(payload, _ext_hook))


def json_default(value: object) -> object:
    """What JSON has no form for, in the form the agent writes it (bytes as text, ext types)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, msgpack.ExtType):
        return {"ext": value.code, "data": value.data.hex()}
    if isinstance(value, msgpack.Timestamp):  # msgpack's own ext type -1
        return {"timestamp_ns": value.to_unix_nano()}
    raise TypeError
