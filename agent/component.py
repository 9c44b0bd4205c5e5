"""The small interfaces inputs, filters and outputs implement."""

from __future__ import annotations

import asyncio
import enum
import errno
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from agent.errors import HttpError

if TYPE_CHECKING:
    from agent.config.types import InputConfigBase
    from agent.journal.batch import TagBatch
    from agent.journal.cursor import Position


Entries = TypeVar("Entries", list[Any], bytes)


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
_TRANSIENT = (asyncio.TimeoutError, asyncio.CancelledError, MemoryError, EOFError, HttpError)


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
    unsent: int = 0  # the first ``unsent`` of ``dead`` were refused before any request was made
    # With OK: records not sent and not refused either, each with why (a test purchase, a duplicate):
    # the ledger counts them as skipped.
    skipped: list[DeadRecord] = field(default_factory=list)

    @classmethod
    def ok(
        cls, dead: list[DeadRecord] | None = None, unsent: int = 0, skipped: list[DeadRecord] | None = None
    ) -> Outcome:
        return cls(SendResult.OK, "", dead or [], unsent, skipped or [])

    @classmethod
    def pause(cls, reason: str) -> Outcome:
        return cls(SendResult.PAUSE, reason)

    @classmethod
    def retry(cls, reason: str) -> Outcome:
        return cls(SendResult.RETRY, reason)

    @classmethod
    def fatal(cls, reason: str) -> Outcome:
        return cls(SendResult.FATAL, reason)

    @classmethod
    def rejected(cls, reason: str) -> Outcome:
        return cls(SendResult.REJECTED, reason)


# Awaited by an output's send_with_progress with how many of its batches are delivered whole.
Progress = Callable[[int], Awaitable[None]]


class Output:
    """An output only encodes and sends; agent/delivery/runner.py owns cursors and retries."""

    name: str

    async def start(self) -> None:
        pass

    async def send(self, batches: list[TagBatch]) -> Outcome:
        raise NotImplementedError

    async def send_with_progress(self, batches: list[TagBatch], progress: Progress | None) -> Outcome:
        """``send``, awaiting ``progress(n)`` whenever the destination has taken the first n
        batches whole, for an output that learns that piece by piece (the forward output's acks):
        the delivery loop saves its cursor there, so a kill repeats less than the whole send.
        Only for outputs whose outcome is all or nothing: no dead or skipped records with OK."""
        return await self.send(batches)

    async def flush(self) -> None:
        """Make what ``send`` accepted durable (called before the cursor moves)."""

    # Does ``flush`` do anything? If not, what ``send`` took is durable when it returns, and the
    # delivery loop saves the cursor after every batch (agent/delivery/runner.py).
    flush_needed = False

    async def close(self) -> None:
        pass

    def counters(self) -> Mapping[str, int]:
        """Its own counts, by what they count (the vendor mirrors': requests, accepted, ...)."""
        return {}

    def shrink(self) -> None:
        """Give back what a burst filled (caches, page caches); called once the process is quiet."""

    def ledger_settled(self, finished_ns: int) -> None:
        """The ledger has counted every send that finished by ``finished_ns`` (wall clock)."""


@dataclass(slots=True)
class Filtered(Generic[Entries]):
    """What a filter made of a batch (see agent/ingest.py).

    ``entries``: the ``[time, record]`` entries to journal: a list from ``apply``, packed bytes
    (``count`` of them) from ``apply_batch``. ``on_durable(True)`` is called once they are durable,
    ``on_durable(False)`` if they never will be. ``refused``: records the filter does not pass on,
    each with its reason; they are dead-lettered under the filter's name."""

    entries: Entries
    count: int = 0
    on_durable: Callable[[bool], None] | None = None
    refused: list[DeadRecord] = field(default_factory=list)


class Metric(enum.Enum):
    """The metric families components report into, each named once: (metric name, help, kind,
    the family's own labels, labelled by the component's name alone rather than by its name,
    kind and type). Adding one is one line here (agent/monitor/metrics.py shows them)."""

    RECEIVED = ("hive_agent_component_received_events", "Events received", "counter", ())
    RECEIVED_BYTES = ("hive_agent_component_received_bytes", "Bytes received", "counter", ())
    SENT = ("hive_agent_component_sent_events", "Events delivered", "counter", ())
    RETRIES = ("hive_agent_component_retries", "Send attempts retried", "counter", ())
    DEAD_LETTERED = ("hive_agent_component_dead_lettered_events", "Events dead-lettered", "counter", ())
    DISCARDED = ("hive_agent_component_discarded_events", "Events not passed on", "counter", ("reason",))
    ERRORS = ("hive_agent_component_errors", "Errors", "counter", ("reason",))
    INVALID = ("hive_agent_invalid_events", "Invalid records by field and rule", "counter", ("field", "rule"), True)
    DEDUP_HITS = ("hive_agent_dedup_hits", "Duplicate purchases dropped", "counter", (), True)
    NORMALIZATION_WARNINGS = (
        "hive_agent_normalization_warnings",
        "Records passed on with a warning",
        "counter",
        (),
        True,
    )
    TAIL_FILES = ("hive_agent_tail_files", "Files a tail input has open", "gauge", (), True)
    TAIL_ROTATIONS = ("hive_agent_tail_rotations", "Files rotated away (renamed or deleted)", "counter", (), True)
    TAIL_TRUNCATIONS = ("hive_agent_tail_truncations", "Files truncated and read again", "counter", (), True)
    TAIL_INVALID_UTF8 = (
        "hive_agent_tail_invalid_utf8_lines",
        "Lines whose invalid UTF-8 was replaced",
        "counter",
        (),
        True,
    )
    TAIL_SCANS = ("hive_agent_tail_scans", "Times the globs were matched again", "counter", (), True)
    FORWARD_AUTH_FAILURES = (
        "hive_agent_forward_auth_failures",
        "PINGs refused: a wrong key or password, or sent too soon after one",
        "counter",
        (),
        True,
    )

    def __init__(self, metric: str, help: str, kind: str, labels: tuple[str, ...], by_name: bool = False):
        self.metric = metric
        self.help = help
        self.kind = kind
        self.labels = labels
        self.by_name = by_name


@dataclass(frozen=True, slots=True)
class Reading:
    """One figure a component reports for /metrics: its family, the values of that family's own
    labels (after the component's), and the value."""

    family: Metric
    value: float
    labels: tuple[str, ...] = ()


class Input:
    """Reads events from outside and hands them to the ingest step (agent/ingest.py)."""

    name: str
    cfg: InputConfigBase
    listening: list[str]  # what it listens on or reads, for the ready line

    async def start(self) -> None:
        pass

    async def stop(self, timeout: float) -> None:
        pass

    def pinned_position(self) -> Position | None:
        """The oldest journal position this input may still read back (its markers), or None."""
        return None

    def received(self) -> tuple[int, int]:
        """(events, bytes) taken in so far."""
        raise NotImplementedError

    def readings(self) -> Iterable[Reading]:
        return ()

    def open_now(self) -> str:
        """What it holds open now, for ``hive-agent status`` ("3 connections", "12 files")."""
        return ""


class Filter:
    """Changes ``[time, record]`` entries of a matching tag."""

    name: str

    def emitted(self) -> int | None:
        """Events passed on so far, where the filter counts them."""
        return None

    def readings(self) -> Iterable[Reading]:
        return ()

    def shrink(self) -> None:
        """Give back what a burst filled (caches, page caches); called once the process is quiet."""

    def carry_over(self, previous: Filter) -> None:
        """A reload replaced ``previous`` (same name) with this one: take over what must outlive the
        change (the hive filter's dedup store, with keys still to be stored; its counters)."""

    def close(self) -> None:
        """A reload removed it: release what it holds."""

    def apply(self, tag: str, entries: list[Any]) -> Filtered[list[Any]]:
        raise NotImplementedError

    def apply_batch(self, tag: str, entries: bytes, count: int) -> Filtered[bytes] | None:
        """The whole batch as packed bytes, for a filter that can; None: call ``apply``."""
        return None
