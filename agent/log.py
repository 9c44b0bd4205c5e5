"""Logging setup: one line per event, to stderr.

One line per event holds even for text a peer wrote (a hostname, a tag): the
text format escapes line breaks and other control characters in every
message, so nobody can forge a line, and :func:`peer_text` bounds what a peer
sends before it reaches a message. :class:`Summary` turns a stream of the
same failure from one peer into one line per interval.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Hashable

import orjson

_CONTROL = {c: f"\\x{c:02x}" for c in range(32) if c not in (9,)} | {10: "\\n", 13: "\\r", 127: "\\x7f"}


def one_line(text: str) -> str:
    """Control characters (line breaks above all) written as escapes."""
    return text.translate(_CONTROL)


def peer_text(value: object, limit: int = 120) -> str:
    """A string a peer sent, fit for one log line: decoded, escaped, and cut to ``limit`` characters."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value[: limit * 4]).decode("utf-8", "replace") + ("" if len(value) <= limit * 4 else "…")
    text = one_line(str(value))
    return text if len(text) <= limit else f"{text[:limit]}…(+{len(text) - limit} characters)"


class Summary:
    """At most one line per key (a peer and what failed) each ``interval`` seconds; the lines held
    back are counted into the next one."""

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] | None = None):
        self.interval = interval
        self.clock = clock or time.monotonic
        self._last: dict = {}
        self._held: dict = {}

    def should_log(self, key: Hashable) -> int | None:
        """None to hold this one back; else how many were held back since the last line."""
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        if len(self._last) > 10_000:  # keys come from peers: bounded
            self._last.clear()
            self._held.clear()
        self._last[key] = now
        return self._held.pop(key, 0)


class _OneLineFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = one_line(record.message)
        return super().formatMessage(record)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return orjson.dumps(
            {
                "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
            }
        ).decode()


def setup_logging(level: str = "info", fmt: str = "text", process: str = "main") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_OneLineFormatter(f"%(asctime)s %(levelname)s [{process}] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
