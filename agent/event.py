"""Event time helpers and the JSON-lines rendering of an event.

A rendered event is one line::

    {"tag": "...", "time": "2026-11-22T03:06:36.745000000Z", "record": {...}}

with ``time`` in RFC 3339, UTC, nanoseconds kept. Rendering is the hot path of
the file output, so the second-resolution prefix is cached and each line is
built from bytes with one ``orjson.dumps`` per record.
"""

from __future__ import annotations

import time

import msgpack
import orjson
import ormsgpack

from agent.component import TagBatch
from agent.protocol.forward import EVENT_TIME_EXT, unpack_event_time

_NS = 1_000_000_000


def _ext_hook(code: int, data: bytes):
    if code == EVENT_TIME_EXT and len(data) == 8:
        return unpack_event_time(data)
    return msgpack.ExtType(code, data)


def decode_batch(payload: bytes) -> TagBatch:
    """A journal payload ``[tag, [[EventTime, record], ...]]`` → TagBatch with int ns times."""
    try:
        tag, entries = ormsgpack.unpackb(payload, ext_hook=_ext_hook)
    except (ormsgpack.MsgpackDecodeError, TypeError, ValueError):
        # ormsgpack is strict (UTF-8, str keys); msgpack takes what senders send.
        tag, entries = msgpack.unpackb(payload, raw=False, strict_map_key=False, unicode_errors="replace",
                                       ext_hook=_ext_hook)
    return TagBatch(tag, entries)


def rfc3339_ns(time_ns: int) -> str:
    seconds, nanos = divmod(time_ns, _NS)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


def _json_default(value):
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, msgpack.ExtType):
        return {"ext": value.code, "data": value.data.hex()}
    raise TypeError


_DUMPS_OPTIONS = orjson.OPT_NON_STR_KEYS


class LineRenderer:
    """Renders events as JSON lines; caches the per-second time prefix per tag."""

    def __init__(self):
        self._seconds: dict[int, bytes] = {}
        self._tags: dict[str, bytes] = {}

    def _prefix(self, tag: str, seconds: int) -> bytes:
        tag_json = self._tags.get(tag)
        if tag_json is None:
            if len(self._tags) > 1024:
                self._tags.clear()
            tag_json = self._tags[tag] = b'{"tag":' + orjson.dumps(tag) + b',"time":"'
        stamp = self._seconds.get(seconds)
        if stamp is None:
            if len(self._seconds) > 4096:
                self._seconds.clear()
            stamp = self._seconds[seconds] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)).encode() + b"."
        return tag_json + stamp

    def render(self, batch: TagBatch) -> list[bytes]:
        lines = []
        prefix_for = self._prefix
        tag = batch.tag
        last_seconds = -1
        prefix = b""
        dumps = orjson.dumps
        for time_ns, record in batch.entries:
            seconds, nanos = divmod(time_ns, _NS)
            if seconds != last_seconds:
                prefix = prefix_for(tag, seconds)
                last_seconds = seconds
            try:
                body = dumps(record, default=_json_default, option=_DUMPS_OPTIONS)
            except TypeError:
                body = dumps(_sanitize(record), default=_json_default, option=_DUMPS_OPTIONS)
            lines.append(b'%s%09dZ","record":%s}\n' % (prefix, nanos, body))
        return lines


def _sanitize(value):
    """Last resort for records orjson refuses (lone surrogates, odd keys)."""
    if isinstance(value, dict):
        return {str(k): _sanitize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_sanitize(v) for v in value]
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, int) and not -(1 << 63) <= value < (1 << 64):
        return str(value)
    return value
