"""The journal writer: append-only segments, group commit, limits, recovery.

Invariants:

* An append is acknowledged (its future resolves) only after its bytes are
  written and, with ``fsync = "always"``, fdatasync'd. Appends that arrive
  while an fsync runs are written together and share the next fsync (group
  commit), so N concurrent connections cost one fsync, not N.
* Every start writes into a *new* segment. Old segments are never appended
  to again, so a cursor that points into a segment whose torn tail recovery
  cut off can never land in the middle of a newer record.
* A failed write is rolled back (the segment is truncated to its last good
  end) and every append of that group fails: nothing is acked that is not
  whole on disk.
* ``max_bytes`` bounds the bytes on disk. Past it :meth:`is_full` is true and
  inputs stop reading until outputs move on and segments are collected; the
  journal never drops.
* A segment is deleted once every output's cursor has passed it, and every
  position an input pins (the tail input's last checkpoint) as well.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent import tasks
from agent.errors import JournalClosed
from agent.fsutil import fsync_dir
from agent.journal.cursor import Position
from agent.journal.record import HEADER_SIZE, batch_payload, encode_record, segment_header
from agent.journal.segment import events_from, list_segments, recover_segment, segment_path

log = logging.getLogger("agent.journal")

FSYNC_POLICIES = ("always", "interval", "off")


@dataclass(slots=True)
class JournalStats:
    appends: int = 0
    records: int = 0
    bytes: int = 0
    commits: int = 0  # group commits
    fsyncs: int = 0
    write_errors: int = 0
    recovered_records: int = 0  # at start
    cut_bytes: int = 0  # a torn tail, cut at start
    quarantined_bytes: int = 0  # damaged bytes set aside at start
    damaged_regions: int = 0


class Journal:
    def __init__(
        self,
        directory: Path,
        *,
        fsync: str = "always",
        fsync_interval: float = 1.0,
        segment_bytes: int = 64 << 20,
        max_bytes: int = 2 << 30,
    ):
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {FSYNC_POLICIES}")
        self.directory = Path(directory)
        self.fsync = fsync
        self.fsync_interval = fsync_interval
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self._sizes: dict[int, int] = {}  # seq -> bytes on disk
        self._seq = 0
        self._fd: int | None = None
        self._end = 0  # bytes in the current segment
        self._pending: list[bytes] = []
        self._pending_events = 0  # entries of the batches in _pending
        self._events: dict[int, int] = {}  # seq -> entries of the batches it holds
        self._taken = 0  # bytes of the group being written
        self._waiters: list[asyncio.Future[Position]] = []
        self._wake = asyncio.Event()  # bound to the loop at its first wait (Python >= 3.10)
        self._writer: asyncio.Task[None] | None = None
        self._syncer: asyncio.Task[None] | None = None
        self._closing = False
        self._broken: str | None = None
        self.write_error: str | None = None  # the last write's error, until a write succeeds (for /health)
        self._room_listeners: list[Callable[[], None]] = []
        self.stats = JournalStats()

    # -- start -----------------------------------------------------------

    def recover(self) -> None:
        """Scan existing segments (cut torn tails) and open a new segment for appends."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for seq in list_segments(self.directory):
            result = recover_segment(segment_path(self.directory, seq), seq, self.directory.parent / "quarantine")
            self.stats.recovered_records += result.records
            self.stats.cut_bytes += result.cut_bytes
            self.stats.quarantined_bytes += result.quarantined_bytes
            self.stats.damaged_regions += result.damaged_regions
            if result.valid_bytes:
                self._sizes[seq] = result.valid_bytes
                self._events[seq] = result.events
        last = max(list_segments(self.directory), default=0)
        self._open_segment(last + 1)

    async def start(self) -> None:
        self._wake = asyncio.Event()  # this loop's
        self._writer = tasks.spawn(self._write_loop(), "journal-writer", owner="journal", critical=True)
        self._writer.add_done_callback(self._writer_done)
        if self.fsync == "interval":
            self._syncer = tasks.spawn(self._interval_sync(), "journal-fsync", owner="journal", critical=True)

    def _open_segment(self, seq: int) -> None:
        path = segment_path(self.directory, seq)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        os.write(fd, segment_header())
        if self.fsync != "off":
            os.fsync(fd)
            fsync_dir(self.directory)
        self._fd, self._seq, self._end = fd, seq, HEADER_SIZE
        self._sizes[seq] = HEADER_SIZE

    # -- appends ---------------------------------------------------------

    def submit(self, tag: str, entries: bytes, count: int, target: str | None = None) -> asyncio.Future[Position]:
        """Queue one batch (for every matching output, or only ``target``).

        The future resolves, with the journal position after the group that
        holds the batch, when it is durable (per policy). Batches submitted
        with no ``await`` between them go into the same group: one write,
        durable together or failed together.
        """
        if self._closing or self._broken is not None:
            raise JournalClosed(f"journal is not accepting writes: {self._broken or 'closed'}")
        fut = asyncio.get_running_loop().create_future()
        record = encode_record(batch_payload(tag, entries, count, target), time.time_ns())
        self._pending.append(record)
        self._pending_events += count
        self._waiters.append(fut)
        self.stats.appends += 1
        self.stats.records += count
        self._wake.set()
        return fut

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._pending:
                if self._closing:
                    return
                continue
            records, waiters, events = self._pending, self._waiters, self._pending_events
            self._pending, self._waiters, self._pending_events = [], [], 0
            data = b"".join(records)
            self._taken = len(data)  # neither pending nor on disk while a roll awaits: still counted
            try:
                if self._end > HEADER_SIZE and self._end + len(data) > self.segment_bytes:
                    await self._roll(loop)
                self._write_all(data)
                self._taken = 0
                if self.fsync == "always":
                    await loop.run_in_executor(None, os.fdatasync, self._segment_fd())
                    self.stats.fsyncs += 1
            except OSError as exc:
                self._taken = 0
                self.stats.write_errors += 1
                self.write_error = exc.strerror or str(exc)
                log.error("journal: write of %d bytes to segment %d failed: %s", len(data), self._seq, exc)
                self._rollback()
                for w in waiters:
                    if not w.done():
                        w.set_exception(exc)
                continue
            self._events[self._seq] = self._events.get(self._seq, 0) + events
            self.write_error = None
            self.stats.commits += 1
            self.stats.bytes += len(data)
            del records, data  # on disk now: an idle loop holds nothing of the last group
            end = Position(self._seq, self._end)
            for w in waiters:
                if not w.done():
                    w.set_result(end)
            if self._pending:
                self._wake.set()

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        start = self._end
        while view:
            n = os.write(self._segment_fd(), view)
            view = view[n:]
            self._end += n
        self._sizes[self._seq] = self._end
        assert self._end == start + len(data)

    def _rollback(self) -> None:
        """Cut the current segment back to its last whole record."""
        try:
            good = self._sizes.get(self._seq, HEADER_SIZE)
            os.ftruncate(self._segment_fd(), good)
            self._end = good
        except OSError as exc:  # the next start's recovery cuts it instead
            log.error("journal: could not roll back segment %d: %s", self._seq, exc)

    def _segment_fd(self) -> int:
        if self._fd is None:
            raise OSError(errno.EBADF, "no journal segment is open")
        return self._fd

    async def _roll(self, loop: asyncio.AbstractEventLoop) -> None:
        fd = self._segment_fd()
        if self.fsync != "off":
            await loop.run_in_executor(None, os.fsync, fd)
        os.close(fd)
        self._open_segment(self._seq + 1)

    async def _interval_sync(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            await asyncio.sleep(self.fsync_interval)
            if self._fd is not None:
                try:
                    await loop.run_in_executor(None, os.fdatasync, self._segment_fd())
                    self.stats.fsyncs += 1
                except OSError as exc:
                    self.write_error = exc.strerror or str(exc)
                    log.error("journal: fsync failed: %s", exc)

    # -- limits and collection ---------------------------------------------

    @property
    def size_bytes(self) -> int:
        return sum(self._sizes.values()) + self._taken + sum(len(r) for r in self._pending)

    @property
    def end_position(self) -> Position:
        return Position(self._seq, self._end)

    def segments(self) -> list[int]:
        return sorted(self._sizes)

    def bytes_after(self, position: Position) -> int:
        """Bytes on disk from ``position`` to the end (what an output there has not delivered)."""
        total = 0
        for seq, size in self._sizes.items():
            if seq > position.segment:
                total += size
            elif seq == position.segment:
                total += max(0, size - position.offset)
        return total

    def events_after(self, position: Position) -> tuple[int, Callable[[], int]]:
        """Entries journaled after ``position``: those of the segments after its own, counted as
        they were written, and a call that counts the rest of its own segment from disk (in a
        thread: it reads up to a segment)."""
        later = sum(n for seq, n in self._events.items() if seq > position.segment)
        path = segment_path(self.directory, position.segment)
        offset = max(position.offset, HEADER_SIZE)
        return later, lambda: events_from(path, offset)

    def is_full(self) -> bool:
        return self.size_bytes >= self.max_bytes

    def on_room(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever collection frees space below the limit."""
        self._room_listeners.append(callback)

    def off_room(self, callback: Callable[[], None]) -> None:
        """No more calls to ``callback`` (an input a reload stopped: it is not kept alive by it)."""
        if callback in self._room_listeners:
            self._room_listeners.remove(callback)

    def collect(self, positions: list[Position]) -> int:
        """Delete segments every position has passed; return bytes freed."""
        if positions:
            oldest_needed = min(p.segment for p in positions)
        else:
            oldest_needed = self._seq
        freed = 0
        for seq in sorted(self._sizes):
            if seq >= oldest_needed or seq >= self._seq:
                break
            try:
                os.unlink(segment_path(self.directory, seq))
            except FileNotFoundError:
                pass
            freed += self._sizes.pop(seq)
            self._events.pop(seq, None)
        if freed and not self.is_full():
            for callback in self._room_listeners:
                callback()
        return freed

    # -- stop ------------------------------------------------------------

    async def close(self) -> None:
        """Write what is queued, fsync, and close. Idempotent."""
        if self._closing:
            return
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        if self._writer is not None:
            await self._writer
        if self._syncer is not None:
            self._syncer.cancel()
        if self._fd is not None:
            if self.fsync != "off":
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None

    def _writer_done(self, task: asyncio.Task[None]) -> None:
        """The writer must never die silently: fail what waits on it, refuse new appends."""
        if task.cancelled() or task.exception() is None:
            return
        self._broken = f"journal writer died: {task.exception()!r}"  # logged by agent/tasks.py
        waiters, self._waiters, self._pending, self._pending_events = self._waiters, [], [], 0
        for w in waiters:
            if not w.done():
                w.set_exception(JournalClosed(self._broken))
