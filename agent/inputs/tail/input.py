"""``type = "tail"``: follow JSON-lines files as Fluentd's in_tail does, without its known losses.

One task per input reads. watchfiles (inotify) says promptly which files
changed; a stat of every watched file each ``stat_interval`` and a glob each
``refresh_interval`` are the safety net. The JSON-lines codec
(agent/protocol/jsonlines.py) turns bytes into records; the position file and
its journal markers (position.py) remember where each file stopped; finding
the files is discovery.py's, and reading one of them followed.py's.

Invariants:

* A file is known by (device, inode), never by its name alone. A file that
  moves to a name the globs also match is the same file: it is never read a
  second time (Fluentd's rotated-names-in-the-glob duplicates, fluentd#1613).
* A position moves only once the lines before it are durable in the journal,
  and never past a partial line; after any stop, kill -9 included, reading
  resumes exactly there.
* Rotation by rename and create: the old file stays open and is read to its
  end; it is released once it has been away from its name for
  ``rotate_wait`` and nothing more arrives. With ``follow_inodes`` a rotated
  file that the globs still match stays watched. A last line without a
  newline is taken as a line when its file is released.
* A deleted file (no links left) is read to its end and closed at once, so
  its disk space is freed (fluentd#780).
* Truncation (copytruncate): a file that shrinks below the read position, or
  whose first bytes changed, is read again from 0. Lines written between the
  copy and the truncate that had not been read yet are lost; that window is
  inherent to copytruncate (fluent-bit#375).
* A line that is not a JSON object, or is longer than ``max_line_size``, goes
  to the dead-letter store with the file, the offset and the reason; the
  lines around it go on.
* Backpressure: while the journal is full, or ``MAX_INFLIGHT`` batches wait
  for it, reading pauses; nothing is skipped. If a journal write fails,
  reading stops until every batch in flight has settled, then every file goes
  back to its last durable position (the lines are read again: duplicates,
  never loss).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import tasks
from agent.component import Input, Metric, Reading
from agent.errors import JournalClosed
from agent.ingest import Ingest, Refused
from agent.inputs.tail.checkpointer import Checkpointer
from agent.inputs.tail.config import TailInputConfig
from agent.inputs.tail.discovery import watch, watch_root
from agent.inputs.tail.fileset import FileSet
from agent.inputs.tail.followed import FollowedFile
from agent.inputs.tail.imported import read_imports
from agent.inputs.tail.position import FilePosition, PositionFile, replay_markers
from agent.journal.cursor import Position
from agent.paths import file_name
from agent.protocol.jsonlines import TooLong, parse_each, parse_lines, to_entries

log = logging.getLogger("agent.input.tail")

MAX_INFLIGHT = 8  # batches of one input waiting for the journal
WATCH_SETTLE = 1.0  # seconds after a watch starts when the directory is globbed again
# Changes that may add a file match the globs again at most this often: a directory where names
# come and go all the time costs one glob per interval, not one per change.
MIN_RESCAN_INTERVAL = 0.1


@dataclass(slots=True)
class TailStats:
    records: int = 0
    bytes: int = 0
    lines_dead_lettered: int = 0
    invalid_utf8_lines: int = 0
    rotations: int = 0
    truncations: int = 0
    files_opened: int = 0
    files_closed: int = 0
    read_errors: int = 0
    scans: int = 0  # the globs matched again (at start, on a change that may add a file, every refresh)


class TailInput(Input):
    """The loop: what to scan, stat and read next; the lines read, parsed and journaled."""

    cfg: TailInputConfig

    def __init__(self, cfg: TailInputConfig, ingest: Ingest, data_dir: Path):
        self.cfg = cfg
        self.name = cfg.name
        self.ingest = ingest
        self.pos_file = PositionFile(
            cfg.pos_file or Path(data_dir) / "tail" / f"{file_name(cfg.name)}.pos.json", cfg.name
        )
        self.listening = [f"files {' '.join(cfg.path)}"]
        self.stats = TailStats()
        self.fileset = FileSet(cfg.name, cfg, self.stats)
        self._wake = asyncio.Event()
        # The journal itself only for this input's position markers (where its lines stand in it).
        self.checkpoints = Checkpointer(cfg.name, ingest.journal, self.pos_file, self.fileset, self._wake.set)
        self._stopping = False
        self._tasks: set[asyncio.Task] = set()
        self._roots: set[str] = set()
        ingest.on_room(self._wake.set)

    @property
    def files(self) -> dict:
        return self.fileset.files

    def received(self) -> tuple[int, int]:
        return self.stats.records, self.stats.bytes

    def open_now(self) -> str:
        return f"{len(self.fileset)} files"

    def readings(self) -> Iterable[Reading]:
        st = self.stats
        return (
            Reading(Metric.DEAD_LETTERED, st.lines_dead_lettered),
            Reading(Metric.ERRORS, st.read_errors, ("read",)),
            Reading(Metric.TAIL_FILES, len(self.fileset)),
            Reading(Metric.TAIL_ROTATIONS, st.rotations),
            Reading(Metric.TAIL_TRUNCATIONS, st.truncations),
            Reading(Metric.TAIL_INVALID_UTF8, st.invalid_utf8_lines),
            Reading(Metric.TAIL_SCANS, st.scans),
        )

    # -- lifecycle -------------------------------------------------------

    async def start(self) -> None:
        fileset = self.fileset
        if not self.pos_file.path.exists() and (self.cfg.import_pos_file or self.cfg.import_fluentbit_db):
            # Off the loop: the forward input of the same agent acks while this reads.
            fileset.imported = await asyncio.to_thread(
                read_imports, self.cfg.import_pos_file, self.cfg.import_fluentbit_db
            )
            log.info("input %s: first start: %d positions imported", self.name, len(fileset.imported))
        positions, since = self.pos_file.load()
        if since is not None:
            n = replay_markers(self.ingest.journal.directory, since, self.name, positions)
            if n:
                log.info("input %s: %d positions newer than the position file taken from the journal", self.name, n)
        fileset.saved = positions
        self._scan(await self._glob(), initial=True)
        fileset.saved = {}
        fileset.imported = {}  # the first scan used them; the position file has its own from now on
        self.checkpoints.start()
        self._spawn(self._run(), "tail-reader")
        self._watch_roots()

    def pinned_position(self) -> Position | None:
        """Journal segments from here on hold markers the position file does not have yet."""
        return self.checkpoints.pinned

    async def stop(self, timeout: float) -> None:
        """Stop reading, wait for the batches in flight, write the position file, close the files."""
        self.ingest.off_room(self._wake.set)
        self._stopping = True
        self._wake.set()
        deadline = time.monotonic() + timeout
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=max(0.01, deadline - time.monotonic()))
        while self.checkpoints.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if not self.checkpoints.failed:
            self.checkpoints.checkpoint(force=True)
        self.fileset.close_all()

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        # Without its reader or a watch this input reads no more: critical (/health says so).
        task = tasks.spawn(coro, f"{name}:{self.name}", owner=self.name, critical=True)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the reader ------------------------------------------------------

    async def _run(self) -> None:
        cfg = self.cfg
        fileset, checkpoints = self.fileset, self.checkpoints
        next_stat = time.monotonic() + cfg.stat_interval
        next_scan = time.monotonic() + cfg.refresh_interval
        while not self._stopping:
            # Cleared before looking at the work, so a wake-up that comes while
            # working is not lost: the wait below returns at once.
            self._wake.clear()
            now = time.monotonic()
            rescan_at = fileset.scanned_at + MIN_RESCAN_INTERVAL
            if (fileset.scan_requested and now >= rescan_at) or now >= next_scan:
                fileset.scan_requested = False
                self._scan(await self._glob())
                next_scan = now + cfg.refresh_interval
                continue  # the world moved on while the thread matched: look at it again
            if now >= next_stat:
                fileset.stat_all()
                checkpoints.checkpoint()
                next_stat = now + cfg.stat_interval
            if checkpoints.failed and not checkpoints.inflight:
                checkpoints.rewind_all()
            if fileset.dirty and self._can_read():
                key = next(iter(fileset.dirty))
                del fileset.dirty[key]
                followed = fileset.files.get(key)
                if followed is not None and self._read_once(followed):
                    fileset.dirty[key] = None  # more to read: after the others (round robin)
                await asyncio.sleep(0)
                continue
            wake_at = min(next_stat, next_scan)
            if fileset.scan_requested:  # held back by MIN_RESCAN_INTERVAL
                wake_at = min(wake_at, rescan_at)
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, wake_at - time.monotonic()))
            except TimeoutError:
                pass

    def _can_read(self) -> bool:
        c = self.checkpoints
        return not c.failed and c.inflight < MAX_INFLIGHT and not self.ingest.is_full()

    def _read_once(self, followed: FollowedFile) -> bool:
        """Read one chunk of ``followed`` and journal its lines; True if there may be more right away."""
        if followed.fd is None:
            return False
        limit = self.cfg.read_bytes_limit
        try:
            self._check_truncated(followed)
            data = os.pread(followed.fd, limit, followed.read_pos)
        except OSError as exc:
            self.stats.read_errors += 1
            log.error(
                "input %s: file %s: read failed at offset %d: %s", self.name, followed.path, followed.read_pos, exc
            )
            return False
        if not data:
            self._at_end(followed)
            return False
        followed.read_pos += len(data)
        start, lines = followed.splitter.feed(data)
        if lines:
            self._emit(followed, start, lines)
        return len(data) == limit

    def _check_truncated(self, followed: FollowedFile) -> None:
        """copytruncate: smaller than what was read, or other first bytes → read again from 0."""
        size = os.fstat(followed.descriptor()).st_size
        if size >= followed.read_pos:
            if size == followed.read_pos or not followed.rewritten():
                return
        self.stats.truncations += 1
        log.info(
            "input %s: file %s was truncated (size %d, read up to %d); reading it again from the start",
            self.name,
            followed.path,
            size,
            followed.read_pos,
        )
        followed.splitter.reset(0)
        followed.read_pos = 0
        followed.generation += 1
        followed.pos = FilePosition(followed.path, 0)  # and no fingerprint: the first bytes are new
        self.fileset.changed = True
        # Journal the reset too: a kill before the next batch must not restart from the old offset.
        try:
            self.checkpoints.submit_marker(followed, FilePosition(followed.path, 0), time.time_ns())
        except JournalClosed as exc:
            log.error("input %s: file %s: truncation not journaled (%s)", self.name, followed.path, exc)
            self.checkpoints.failed = True

    def _emit(self, followed: FollowedFile, start: int, lines: bytes | list[bytes | TooLong]) -> None:
        now = time.time_ns()
        parsed = parse_lines(lines, start)
        try:
            entries = self._entries(followed, parsed.records, now)
        except OverflowError:  # an integer beyond 64 bits: the line-by-line parser rejects its line
            parsed = parse_each(lines, start)
            entries = self._entries(followed, parsed.records, now)
        refused = self._refused(followed, parsed.bad, now) if parsed.bad else None
        if parsed.invalid_utf8:
            self.stats.invalid_utf8_lines += parsed.invalid_utf8
            log.warning(
                "input %s: file %s: %d lines with invalid UTF-8 before offset %d (replaced with U+FFFD)",
                self.name,
                followed.path,
                parsed.invalid_utf8,
                followed.splitter.consumed,
            )
        count = len(parsed.records)
        self.stats.records += count
        self.stats.bytes += followed.splitter.consumed - start
        try:
            # No await between the two: the lines and their marker share one journal group.
            lines_written = self.ingest.submit(followed.tag, entries, count, refused=refused)
            self.checkpoints.submit_marker(followed, followed.next_position(), now, after=lines_written)
        except JournalClosed as exc:
            log.error("input %s: file %s: not journaled (%s); will be read again", self.name, followed.path, exc)
            self.checkpoints.failed = True

    def _entries(self, followed: FollowedFile, records: list[dict], now: int) -> bytes:
        if records and self.cfg.path_key:
            for record in records:
                record[self.cfg.path_key] = followed.path
        return to_entries(records, now)

    def _refused(self, followed: FollowedFile, bad: list, now: int) -> Refused:
        """Lines that are not records, for the ingest step to dead-letter under this input's name."""
        items = [
            (followed.tag, now, {"file": followed.path, "offset": b.offset, "line": b.text}, b.reason) for b in bad
        ]
        self.stats.lines_dead_lettered += len(items)
        first = bad[0]
        log.warning(
            "input %s: file %s offset %d: %s; dead-lettered%s",
            self.name,
            followed.path,
            first.offset,
            first.reason,
            f" (+{len(bad) - 1} more lines)" if len(bad) > 1 else "",
        )
        return {self.name: items}

    def _at_end(self, followed: FollowedFile) -> None:
        """Nothing more to read now: close a deleted file, release a rotated one after rotate_wait."""
        if followed.gone:
            self._finish(followed, "deleted")
        elif followed.away_since is not None and time.monotonic() - followed.away_since >= self.cfg.rotate_wait:
            self._finish(followed, "rotated")

    def _finish(self, followed: FollowedFile, why: str) -> None:
        if followed.splitter.buffered and not self.checkpoints.failed:
            # The writer is done with it: a last line without a newline is still a line.
            start, lines = followed.splitter.feed(b"\n")
            if lines:
                self._emit(followed, start, lines)
        log.info(
            "input %s: file %s (inode %d) %s; read to offset %d and closed",
            self.name,
            followed.path,
            followed.key[1],
            why,
            followed.read_pos,
        )
        self.fileset.release(followed, rotated=why == "rotated")

    # -- finding files -----------------------------------------------------

    async def _glob(self) -> dict[str, os.stat_result]:
        """What the globs match now, found in a thread: with 15,000 files a glob, a stat and a
        realpath each take the loop (and the acks of a forward input beside) for a second."""
        self.stats.scans += 1
        matches = await asyncio.to_thread(self.fileset.finder.glob)
        self.fileset.scanned_at = time.monotonic()
        return matches

    def _scan(self, matches: dict[str, os.stat_result], initial: bool = False) -> None:
        self.fileset.scan(matches, initial)
        self._watch_roots()

    # -- inotify -----------------------------------------------------------

    def _watch_roots(self) -> None:
        """Watch the directory under each glob that exists (the scan covers the others)."""
        for pattern in self.cfg.path:
            root, recursive = watch_root(pattern)
            if root in self._roots or not os.path.isdir(root):
                continue
            self._roots.add(root)
            self._spawn(watch(root, recursive, self.fileset.changed_on_disk, self._wake.set), f"tail-watch {root}")
            # A watch takes a moment to start in its thread: look again once it surely runs,
            # for a file created in between (else it would wait for refresh_interval).
            asyncio.get_running_loop().call_later(WATCH_SETTLE, self._request_scan)

    def _request_scan(self) -> None:
        self.fileset.scan_requested = True
        self._wake.set()


def build(cfg: TailInputConfig, ingest: Ingest, data_dir: Path) -> TailInput:
    return TailInput(cfg, ingest, data_dir)
