"""The small interfaces inputs, filters and outputs implement."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class SendResult(enum.Enum):
    OK = "ok"
    RETRY = "retry"  # temporary: try again after a backoff
    FATAL = "fatal"  # this batch can never be delivered: dead letter


@dataclass(slots=True)
class Outcome:
    result: SendResult
    reason: str = ""

    @classmethod
    def ok(cls) -> "Outcome":
        return cls(SendResult.OK)

    @classmethod
    def retry(cls, reason: str) -> "Outcome":
        return cls(SendResult.RETRY, reason)

    @classmethod
    def fatal(cls, reason: str) -> "Outcome":
        return cls(SendResult.FATAL, reason)


@dataclass(slots=True)
class TagBatch:
    """Decoded events of one tag: ``entries`` are ``[time_ns, record]`` pairs."""

    tag: str
    entries: list = field(default_factory=list)


class Output:
    """An output only encodes and sends; delivery.py owns cursors and retries."""

    name: str

    async def start(self) -> None:
        pass

    async def send(self, batches: list[TagBatch]) -> Outcome:
        raise NotImplementedError

    async def flush(self) -> None:
        """Make what ``send`` accepted durable (called before the cursor moves)."""

    async def close(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {}


class Filter:
    """Changes ``[time, record]`` entries of a matching tag; returns the entries to keep."""

    def apply(self, tag: str, entries: list) -> list:
        raise NotImplementedError
