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
from collections.abc import Callable, Iterable
from typing import Any

import msgpack
import msgspec
import orjson

from agent.journal.batch import TagBatch, json_default, key_text, lenient_decode, other_ext, tag_and_entries
from agent.journal.record import entries_array
from agent.protocol.event_time import EVENT_TIME_EXT, NANOS, seconds_and_nanos
from agent.protocol.forward.entries import array_runs

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


# Lines encoded by one call: enough that the call's cost is spread, few enough that a
# batch's records are never alive together.
_LINES_AT_ONCE = 64


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

    def render(self, batch: TagBatch, restyle: Callable[[Any], Any] | None = None) -> bytes:
        """The batch's JSON lines, each record first through ``restyle`` (an output's key style).

        With ``restyle`` the records are decoded, restyled and encoded a run of entries at a
        time: a batch is never in memory as objects all at once (twice over: each record and
        its restyled copy), so a burst leaves less in the allocator, where what stays follows
        the most small objects alive at one moment. Without it a payload is one decode and
        one encode: cut into runs, the raw file output lost a tenth of its rate."""
        if batch.payload is None:
            entries = batch.entries
            runs: Iterable[list[Any]] = (
                [(rfc3339_ns(t), r) for t, r in entries[i : i + _LINES_AT_ONCE]]
                for i in range(0, len(entries), _LINES_AT_ONCE)
            )
            return self._lines(batch.tag, runs, restyle)
        if restyle is not None:
            try:
                encoded = array_runs(entries_array(batch.payload), _LINES_AT_ONCE)
            except (msgspec.DecodeError, IndexError, ValueError):
                pass  # not an array msgspec can walk: decoded whole, below
            else:
                return self._lines(batch.tag, map(self._run, encoded), restyle)
        try:
            tag, entries = tag_and_entries(self._decoder.decode(batch.payload))
        except (msgspec.DecodeError, TypeError, ValueError):
            tag, entries = tag_and_entries(lenient_decode(batch.payload, self._time_hook))
        return self._lines(tag, [entries], restyle)

    def _run(self, run: bytes) -> list[Any]:
        try:
            decoded: list[Any] = self._decoder.decode(run)
        except (msgspec.DecodeError, TypeError, ValueError):
            decoded = lenient_decode(run, self._time_hook)
        return decoded

    def _lines(self, tag: str, runs: Iterable[list[Any]], restyle: Callable[[Any], Any] | None) -> bytes:
        out = []
        for run in runs:
            if restyle is None:
                out.append(self._encode([_Line(tag, t, r) for t, r in run]))
            else:
                out.append(self._encode([_Line(tag, t, restyle(r)) for t, r in run]))
        return b"".join(out)

    def _encode(self, lines: list[_Line]) -> bytes:
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
