"""The small interfaces inputs, filters and outputs implement."""

from __future__ import annotations

import asyncio
import enum
import errno
from dataclasses import dataclass, field

import aiohttp

class SendResult(enum.Enum):
    OK = "ok"
    RETRY = "retry"  # temporary: try again after a backoff
    FATAL = "fatal"  # this batch can never be delivered: dead letter
    PAUSE = "pause"  # the destination refuses us (credentials): alert, keep the backlog, try again later
    REJECTED = "rejected"  # some record of this batch makes it fail: split it and find which


# OS errors that a request's own content causes (its file name, its bytes): sending it again
# cannot help. Every other OS error (a full disk, EIO, a refused connection) may pass.
_CAUSED_BY_RECORDS = {errno.ENAMETOOLONG, errno.EINVAL, errno.EILSEQ, errno.EISDIR, errno.ENOTDIR, errno.ELOOP}


# What a network or the machine does, whatever the records: worth a retry, never a split.
_TRANSIENT = (asyncio.TimeoutError, asyncio.CancelledError, MemoryError, EOFError, aiohttp.ClientError)


def caused_by_records(exc: BaseException) -> bool:
    """Is this failure the records' own, so that the same records would fail the same way again?"""
    if isinstance(exc, OSError):
        return exc.errno in _CAUSED_BY_RECORDS
    return not isinstance(exc, _TRANSIENT)


# A record an output could not deliver while the rest went: (tag, time_ns, record, reason).
DeadRecord = tuple[str, int, dict, str]


@dataclass(slots=True)
class Outcome:
    result: SendResult
    reason: str = ""
    dead: list[DeadRecord] = field(default_factory=list)  # with OK: delivered all but these

    @classmethod
    def ok(cls, dead: list[DeadRecord] | None = None) -> "Outcome":
        return cls(SendResult.OK, "", dead or [])

    @classmethod
    def pause(cls, reason: str) -> "Outcome":
        return cls(SendResult.PAUSE, reason)

    @classmethod
    def retry(cls, reason: str) -> "Outcome":
        return cls(SendResult.RETRY, reason)

    @classmethod
    def fatal(cls, reason: str) -> "Outcome":
        return cls(SendResult.FATAL, reason)

    @classmethod
    def rejected(cls, reason: str) -> "Outcome":
        return cls(SendResult.REJECTED, reason)


class TagBatch:
    """The events of one journal record: one tag, ``[time_ns, record]`` entries.

    Built from a journal payload, the entries are decoded on first use, so an
    output that can work from the payload itself (the file output renders it
    straight to JSON lines) never pays for a generic decode.
    """

    __slots__ = ("tag", "payload", "_entries")

    def __init__(self, tag: str, entries: list | None = None, payload: bytes | None = None):
        self.tag = tag
        self.payload = payload
        self._entries = entries

    @property
    def entries(self) -> list:
        if self._entries is None:
            from agent.event import decode_entries
            self._entries = decode_entries(self.payload)[1]
        return self._entries

    def __len__(self) -> int:
        if self._entries is None and self.payload is not None:
            from agent.journal.record import batch_count
            return batch_count(self.payload)
        return len(self.entries)


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


class Filter:
    """Changes ``[time, record]`` entries of a matching tag; returns the entries to keep."""

    def apply(self, tag: str, entries: list) -> list:
        raise NotImplementedError

    def take_settle(self):
        """A callable told whether the last apply's records reached the journal, or None."""
        return None
