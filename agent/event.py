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
import msgspec
import orjson

from agent.component import TagBatch
from agent.protocol.forward import EVENT_TIME_EXT, unpack_event_time

_NS = 1_000_000_000


def _ext_hook(code: int, data: bytes):
    if code == EVENT_TIME_EXT and len(data) == 8:
        return unpack_event_time(data)
    return msgpack.ExtType(code, data)


_decoder = msgspec.msgpack.Decoder(ext_hook=_ext_hook)


def decode_batch(payload: bytes) -> TagBatch:
    """A journal payload ``[tag, [[EventTime, record], ...]]`` → TagBatch with int ns times."""
    try:
        tag, entries = _decoder.decode(payload)
    except (msgspec.DecodeError, TypeError, ValueError):
        # msgspec is strict (UTF-8 strings); msgpack takes what senders send.
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


class _Line(msgspec.Struct):
    tag: str
    time: str
    record: dict


def _enc_hook(value):
    if isinstance(value, msgpack.ExtType):
        return {"ext": value.code, "data": value.data.hex()}
    raise NotImplementedError


class LineRenderer:
    """Renders events as JSON lines: one ``encode_lines`` call per batch, times cached per second."""

    def __init__(self):
        self._seconds: dict[int, str] = {}
        self._encoder = msgspec.json.Encoder(enc_hook=_enc_hook)

    def _stamp(self, seconds: int) -> str:
        stamp = self._seconds.get(seconds)
        if stamp is None:
            if len(self._seconds) > 4096:
                self._seconds.clear()
            stamp = self._seconds[seconds] = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(seconds))
        return stamp

    def render(self, batch: TagBatch) -> bytes:
        tag = batch.tag
        last_seconds = -1
        stamp = ""
        lines = []
        append = lines.append
        for time_ns, record in batch.entries:
            seconds, nanos = divmod(time_ns, _NS)
            if seconds != last_seconds:
                stamp = self._stamp(seconds)
                last_seconds = seconds
            append(_Line(tag, f"{stamp}{nanos:09d}Z", record))
        try:
            return self._encoder.encode_lines(lines)
        except (TypeError, ValueError, UnicodeEncodeError, OverflowError):
            return b"".join(orjson.dumps({"tag": line.tag, "time": line.time, "record": _sanitize(line.record)},
                                         default=_json_default, option=_DUMPS_OPTIONS) + b"\n" for line in lines)


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
