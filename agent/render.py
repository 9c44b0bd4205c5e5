"""Decoding journal batches, and the JSON-lines rendering of events.

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

import msgpack
import msgspec
import orjson

from agent.component import TagBatch
from agent.protocol.event_time import EVENT_TIME_EXT, NANOS, seconds_and_nanos, unpack_event_time


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


# Records nest as deep as msgpack's own unpacker allows (1,024 levels: ingest skips each record
# with it); rendering them recurses once a level, so the delivery process allows more than that.
RENDER_RECURSION_LIMIT = 4000


def allow_deep_records() -> None:
    if sys.getrecursionlimit() < RENDER_RECURSION_LIMIT:
        sys.setrecursionlimit(RENDER_RECURSION_LIMIT)


def _pairs(pairs: list) -> dict:
    """A map whose keys msgpack gives as lists or maps (JSON and Python dicts have no such keys):
    each such key becomes its JSON text."""
    out = {}
    for key, value in pairs:
        try:
            out[key] = value
        except TypeError:
            out[_key_text(key)] = value
    return out


def _key_text(key) -> str:
    try:
        return orjson.dumps(key, default=json_default, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return repr(key)


def _lenient(payload: bytes, ext_hook) -> list:
    """msgspec is strict (UTF-8 strings, plain keys); msgpack takes what senders send."""
    return msgpack.unpackb(
        payload, raw=False, strict_map_key=False, unicode_errors="replace", ext_hook=ext_hook, object_pairs_hook=_pairs
    )


def _tag_and_entries(decoded: list) -> tuple[str, list]:
    # [tag, entries], or [tag, target, entries] for a batch meant for one output.
    return decoded[0], decoded[-1]


def decode_entries(payload: bytes) -> tuple[str, list]:
    """A journal payload ``[tag, [[EventTime, record], ...]]`` → (tag, [[time_ns, record], ...])."""
    try:
        return _tag_and_entries(_decoder.decode(payload))
    except (msgspec.DecodeError, TypeError, ValueError):
        return _tag_and_entries(_lenient(payload, _ext_hook))


def rfc3339_ns(time_ns: int) -> str:
    seconds, nanos = divmod(time_ns, NANOS)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


def json_default(value):
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, msgpack.ExtType):
        return {"ext": value.code, "data": value.data.hex()}
    if isinstance(value, msgpack.Timestamp):  # msgpack's own ext type -1
        return {"timestamp_ns": value.to_unix_nano()}
    raise TypeError


_DUMPS_OPTIONS = orjson.OPT_NON_STR_KEYS


class _Line(msgspec.Struct):
    tag: str
    time: str
    record: dict


def _enc_hook(value):
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
                tag, entries = _tag_and_entries(self._decoder.decode(batch.payload))
            except (msgspec.DecodeError, TypeError, ValueError):
                tag, entries = _tag_and_entries(_lenient(batch.payload, self._time_hook))
        else:
            tag, entries = batch.tag, [[rfc3339_ns(t), r] for t, r in batch.entries]
        lines = [_Line(tag, t, r) for t, r in entries]
        try:
            return self._encoder.encode_lines(lines)
        except (TypeError, ValueError, UnicodeEncodeError, OverflowError, NotImplementedError):
            return b"".join(
                to_json({"tag": line.tag, "time": line.time, "record": line.record}) + b"\n" for line in lines
            )


def _any_default(value):
    """The last resort's hook: a value of a type JSON has no form for is written as its repr."""
    try:
        return json_default(value)
    except TypeError:
        return repr(value)


_json_encoder = msgspec.json.Encoder(enc_hook=_any_default)


def to_json(value) -> bytes:
    """JSON for anything a record may hold: orjson, or, for what it refuses (nesting past 255
    levels, odd keys, huge integers, lone surrogates), the sanitized value through msgspec."""
    try:
        return orjson.dumps(value, default=json_default, option=_DUMPS_OPTIONS)
    except TypeError:
        return _json_encoder.encode(_sanitize(value))


def _sanitize(value):
    """Last resort for records the encoder refuses (lone surrogates, odd keys, huge ints)."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else _key_text(k): _sanitize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_sanitize(v) for v in value]
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")  # as orjson's default writes them
    if isinstance(value, int) and not -(1 << 63) <= value < (1 << 64):
        return str(value)
    return value
