"""The JSON-lines rendering of events (a journal batch decodes in agent/journal/batch.py).

A rendered event is one line::

    {"tag": "...", "time": "2026-11-22T03:06:36.745000000Z", "record": {...}}

with ``time`` in RFC 3339, UTC, nanoseconds kept. Rendering is the hot path of
the file output: the batch is decoded with msgspec, whose ext hook (called
once per event anyway) formats the time straight into its string with the
second-resolution prefix cached, and the whole batch is written by one
``encode_lines`` call.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import msgpack
import msgspec
import orjson

from agent.journal.batch import TagBatch, json_default, key_text, lenient_decode, other_ext, tag_and_entries
from agent.protocol.event_time import EVENT_TIME_EXT, NANOS, seconds_and_nanos

# Records nest as deep as msgpack's own unpacker allows (1,024 levels: ingest skips each record
# with it); rendering them recurses once a level, so the delivery process allows more than that.
RENDER_RECURSION_LIMIT = 4000


def allow_deep_records() -> None:
    if sys.getrecursionlimit() < RENDER_RECURSION_LIMIT:
        sys.setrecursionlimit(RENDER_RECURSION_LIMIT)


def rfc3339_ns(time_ns: int) -> str:
    seconds, nanos = divmod(time_ns, NANOS)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


_DUMPS_OPTIONS = orjson.OPT_NON_STR_KEYS


class _Line(msgspec.Struct):
    tag: str
    time: str
    record: dict[str, Any]


def _enc_hook(value: object) -> object:
    if isinstance(value, (msgpack.ExtType, msgpack.Timestamp)):
        return json_default(value)
    raise NotImplementedError


class LineRenderer:
    """Renders journal batches as JSON lines."""

    def __init__(self) -> None:
        stamps: dict[int, str] = {}

        unpack = seconds_and_nanos

        def time_hook(code: int, data: memoryview) -> object:
            if code != EVENT_TIME_EXT or len(data) != 8:
                return other_ext(code, data)
            seconds, nanos = unpack(data)
            stamp = stamps.get(seconds)
            if stamp is None:
                if len(stamps) > 4096:
                    stamps.clear()
                stamp = stamps[seconds] = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(seconds))
            return f"{stamp}{nanos:09d}Z"

        self._time_hook = time_hook
        self._decoder = msgspec.msgpack.Decoder(ext_hook=time_hook)
        self._encoder = msgspec.json.Encoder(enc_hook=_enc_hook)

    def render(self, batch: TagBatch) -> bytes:
        if batch.payload is not None:
            try:
                tag, entries = tag_and_entries(self._decoder.decode(batch.payload))
            except (msgspec.DecodeError, TypeError, ValueError):
                tag, entries = tag_and_entries(lenient_decode(batch.payload, self._time_hook))
        else:
            tag, entries = batch.tag, [[rfc3339_ns(t), r] for t, r in batch.entries]
        lines = [_Line(tag, t, r) for t, r in entries]
        try:
            return self._encoder.encode_lines(lines)
        except (TypeError, ValueError, UnicodeEncodeError, OverflowError, NotImplementedError):
            return b"".join(
                to_json({"tag": line.tag, "time": line.time, "record": line.record}) + b"\n" for line in lines
            )


def _any_default(value: object) -> object:
    """The last resort's hook: a value of a type JSON has no form for is written as its repr."""
    try:
        return json_default(value)
    except TypeError:
        return repr(value)


_json_encoder = msgspec.json.Encoder(enc_hook=_any_default)


def to_json(value: object) -> bytes:
    """JSON for anything a record may hold: orjson, or, for what it refuses (nesting past 255
    levels, odd keys, huge integers, lone surrogates), the sanitized value through msgspec."""
    try:
        return orjson.dumps(value, default=json_default, option=_DUMPS_OPTIONS)
    except TypeError:
        return _json_encoder.encode(_sanitize(value))


def _sanitize(value: object) -> object:
    """Last resort for records the encoder refuses (lone surrogates, odd keys, huge ints)."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else key_text(k): _sanitize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_sanitize(v) for v in value]
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")  # as orjson's default writes them
    if isinstance(value, int) and not -(1 << 63) <= value < (1 << 64):
        return str(value)
    return value
