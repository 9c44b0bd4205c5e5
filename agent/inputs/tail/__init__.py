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
import re
import stat
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from agent import tasks
from agent.component import Input, Reading
from agent.errors import JournalClosed
from agent.ingest import Ingest, Refused, when_all
from agent.inputs.tail.config import TailInputConfig as TailInputConfig  # the registry's
from agent.inputs.tail.discovery import FileFinder, expand_tag, watch, watch_root
from agent.inputs.tail.followed import FollowedFile, after_last_newline, line_start, same_file
from agent.inputs.tail.imported import ImportedPosition, read_imports
from agent.inputs.tail.position import (
    FINGERPRINT_BYTES,
    FileKey,
    FilePosition,
    PositionFile,
    fingerprint,
    marker_entry,
    replay_markers,
)
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
    def __init__(self, cfg: TailInputConfig, ingest: Ingest, data_dir: Path):
        self.cfg = cfg
        self.name = cfg.name
        self.ingest = ingest
        # The journal itself only for this input's position markers (where its lines stand in it).
        self.journal = ingest.journal
        self.tag_regex = re.compile(cfg.tag_regex) if cfg.tag_regex else None
        self.pos_file = PositionFile(
            cfg.pos_file or Path(data_dir) / "tail" / f"{file_name(cfg.name)}.pos.json", cfg.name
        )
        self.listening = [f"files {' '.join(cfg.path)}"]
        self.files: dict[FileKey, FollowedFile] = {}
        self.released: dict[FileKey, FilePosition] = {}  # rotated names in the globs, done with
        self._saved: dict[FileKey, FilePosition] = {}  # loaded at start, for files not found yet
        self._imported: dict[int, ImportedPosition] = {}  # by inode, from another agent, first start only
        self._by_path: dict[str, FileKey] = {}
        self._dirty: dict[FileKey, None] = {}  # files to read, in order (a set that keeps order)
        self.finder = FileFinder(self.name, cfg.path, cfg.exclude_path)
        self._wake = asyncio.Event()
        self._scan_requested = False
        self._scanned_at = 0.0  # monotonic: when the globs last matched
        self._stopping = False
        self._inflight = 0
        self._failed = False
        self._durable_at: Position | None = None  # journal position of the newest durable marker
        self._pinned: Position | None = None  # the journal position the position file is as of
        self._pos_changed = False
        self._tasks: set[asyncio.Task] = set()
        self._roots: set[str] = set()
        self.stats = TailStats()
        ingest.on_room(self._wake.set)

    def received(self) -> tuple[int, int]:
        return self.stats.records, self.stats.bytes

    def open_now(self) -> str:
        return f"{len(self.files)} files"

    def readings(self) -> Iterable[Reading]:
        st = self.stats
        return (
            Reading("dead_lettered", st.lines_dead_lettered),
            Reading("errors", st.read_errors, ("read",)),
            Reading("tail_files", len(self.files)),
            Reading("tail_rotations", st.rotations),
            Reading("tail_truncations", st.truncations),
            Reading("tail_invalid_utf8", st.invalid_utf8_lines),
            Reading("tail_scans", st.scans),
        )

    # -- lifecycle -------------------------------------------------------

    async def start(self) -> None:
        if not self.pos_file.path.exists() and (self.cfg.import_pos_file or self.cfg.import_fluentbit_db):
            # Off the loop: the forward input of the same agent acks while this reads.
            self._imported = await asyncio.to_thread(
                read_imports, self.cfg.import_pos_file, self.cfg.import_fluentbit_db
            )
            log.info("input %s: first start: %d positions imported", self.name, len(self._imported))
        positions, since = self.pos_file.load()
        if since is not None:
            n = replay_markers(self.journal.directory, since, self.name, positions)
            if n:
                log.info("input %s: %d positions newer than the position file taken from the journal", self.name, n)
        self._saved = positions
        self._scan(await self._glob(), initial=True)
        self._saved = {}
        self._imported = {}  # the first scan used them; the position file has its own from now on
        self._pinned = self._durable_at = self.journal.end_position
        self._checkpoint(force=True)
        self._spawn(self._run(), "tail-reader")
        self._watch_roots()

    def pinned_position(self) -> Position | None:
        """Journal segments from here on hold markers the position file does not have yet."""
        return self._pinned

    async def stop(self, timeout: float) -> None:
        """Stop reading, wait for the batches in flight, write the position file, close the files."""
        self._stopping = True
        self._wake.set()
        deadline = time.monotonic() + timeout
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=max(0.01, deadline - time.monotonic()))
        while self._inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if not self._failed:
            self._checkpoint(force=True)
        for w in list(self.files.values()):
            self._close(w)

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        # Without its reader or a watch this input reads no more: critical (/health says so).
        task = tasks.spawn(coro, f"{name}:{self.name}", owner=self.name, critical=True)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the reader ------------------------------------------------------

    async def _run(self) -> None:
        cfg = self.cfg
        next_stat = time.monotonic() + cfg.stat_interval
        next_scan = time.monotonic() + cfg.refresh_interval
        while not self._stopping:
            # Cleared before looking at the work, so a wake-up that comes while
            # working is not lost: the wait below returns at once.
            self._wake.clear()
            now = time.monotonic()
            if (self._scan_requested and now >= self._scanned_at + MIN_RESCAN_INTERVAL) or now >= next_scan:
                self._scan_requested = False
                self._scan(await self._glob())
                next_scan = now + cfg.refresh_interval
                continue  # the world moved on while the thread matched: look at it again
            if now >= next_stat:
                self._stat_all()
                self._checkpoint()
                next_stat = now + cfg.stat_interval
            if self._failed and not self._inflight:
                self._rewind_all()
            if self._dirty and self._can_read():
                key = next(iter(self._dirty))
                del self._dirty[key]
                w = self.files.get(key)
                if w is not None and self._read_once(w):
                    self._dirty[key] = None  # more to read: after the others (round robin)
                await asyncio.sleep(0)
                continue
            wake_at = min(next_stat, next_scan)
            if self._scan_requested:  # held back by MIN_RESCAN_INTERVAL
                wake_at = min(wake_at, self._scanned_at + MIN_RESCAN_INTERVAL)
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, wake_at - time.monotonic()))
            except TimeoutError:
                pass

    def _can_read(self) -> bool:
        return not self._failed and self._inflight < MAX_INFLIGHT and not self.ingest.is_full()

    def _read_once(self, w: FollowedFile) -> bool:
        """Read one chunk of ``w`` and journal its lines; True if there may be more right away."""
        if w.fd is None:
            return False
        limit = self.cfg.read_bytes_limit
        try:
            self._check_truncated(w)
            data = os.pread(w.fd, limit, w.read_pos)
        except OSError as exc:
            self.stats.read_errors += 1
            log.error("input %s: file %s: read failed at offset %d: %s", self.name, w.path, w.read_pos, exc)
            return False
        if not data:
            self._at_end(w)
            return False
        w.read_pos += len(data)
        start, lines = w.splitter.feed(data)
        if lines:
            self._emit(w, start, lines)
        return len(data) == limit

    def _check_truncated(self, w: FollowedFile) -> None:
        """copytruncate: smaller than what was read, or other first bytes → read again from 0."""
        size = os.fstat(w.descriptor()).st_size
        if size >= w.read_pos:
            if size == w.read_pos or not w.rewritten():
                return
        self.stats.truncations += 1
        log.info(
            "input %s: file %s was truncated (size %d, read up to %d); reading it again from the start",
            self.name,
            w.path,
            size,
            w.read_pos,
        )
        w.splitter.reset(0)
        w.read_pos = 0
        w.generation += 1
        w.pos = FilePosition(w.path, 0)  # and no fingerprint: the first bytes are new
        self._pos_changed = True
        # Journal the reset too: a kill before the next batch must not restart from the old offset.
        try:
            self._submit_marker(w, FilePosition(w.path, 0), time.time_ns())
        except JournalClosed as exc:
            log.error("input %s: file %s: truncation not journaled (%s)", self.name, w.path, exc)
            self._failed = True

    def _emit(self, w: FollowedFile, start: int, lines: bytes | list[bytes | TooLong]) -> None:
        now = time.time_ns()
        parsed = parse_lines(lines, start)
        try:
            entries = self._entries(w, parsed.records, now)
        except OverflowError:  # an integer beyond 64 bits: the line-by-line parser rejects its line
            parsed = parse_each(lines, start)
            entries = self._entries(w, parsed.records, now)
        refused = self._refused(w, parsed.bad, now) if parsed.bad else None
        if parsed.invalid_utf8:
            self.stats.invalid_utf8_lines += parsed.invalid_utf8
            log.warning(
                "input %s: file %s: %d lines with invalid UTF-8 before offset %d (replaced with U+FFFD)",
                self.name,
                w.path,
                parsed.invalid_utf8,
                w.splitter.consumed,
            )
        count = len(parsed.records)
        self.stats.records += count
        self.stats.bytes += w.splitter.consumed - start
        try:
            # No await between the two: the lines and their marker share one journal group.
            lines_written = self.ingest.submit(w.tag, entries, count, refused=refused)
            self._submit_marker(w, w.next_position(), now, after=lines_written)
        except JournalClosed as exc:
            log.error("input %s: file %s: not journaled (%s); will be read again", self.name, w.path, exc)
            self._failed = True

    def _submit_marker(
        self, w: FollowedFile, pos: FilePosition, now: int, after: asyncio.Future | None = None
    ) -> asyncio.Future:
        """Journal ``w``'s next position; it counts as durable once ``after`` (the lines before it,
        journaled or dead-lettered) is too."""
        fut = self.journal.submit(self.name, marker_entry(w.key, pos, now), 1, target=self.name)
        if after is not None:
            fut = when_all([fut, after])
        self._inflight += 1
        fut.add_done_callback(partial(self._on_durable, w, pos, w.generation))
        return fut

    def _entries(self, w: FollowedFile, records: list[dict], now: int) -> bytes:
        if records and self.cfg.path_key:
            for record in records:
                record[self.cfg.path_key] = w.path
        return to_entries(records, now)

    def _on_durable(self, w: FollowedFile, pos: FilePosition, generation: int, fut: asyncio.Future) -> None:
        self._inflight -= 1
        self._wake.set()
        if fut.cancelled() or fut.exception() is not None:
            if not self._failed:
                log.error(
                    "input %s: journal write failed (%s); reading stops until the batches in flight "
                    "settle, then resumes from the last durable positions",
                    self.name,
                    "cancelled" if fut.cancelled() else fut.exception(),
                )
            self._failed = True
            return
        # A marker whose lines went to the dead-letter thread may settle after a later one.
        self._durable_at = max(fut.result(), self._durable_at or fut.result())
        if self._failed or generation != w.generation:
            return
        w.pos = pos
        self._pos_changed = True

    def _rewind_all(self) -> None:
        """After a failed journal write: every file back to its durable position; markers beyond it void."""
        for w in self.files.values():
            w.splitter.reset(w.pos.offset)
            w.read_pos = w.pos.offset
            self._dirty[w.key] = None
        self._durable_at = self.journal.end_position
        self._failed = False
        self._checkpoint(force=True)
        log.info("input %s: reading again from the last durable positions", self.name)

    def _refused(self, w: FollowedFile, bad: list, now: int) -> Refused:
        """Lines that are not records, for the ingest step to dead-letter under this input's name."""
        items = [(w.tag, now, {"file": w.path, "offset": b.offset, "line": b.text}, b.reason) for b in bad]
        self.stats.lines_dead_lettered += len(items)
        first = bad[0]
        log.warning(
            "input %s: file %s offset %d: %s; dead-lettered%s",
            self.name,
            w.path,
            first.offset,
            first.reason,
            f" (+{len(bad) - 1} more lines)" if len(bad) > 1 else "",
        )
        return {self.name: items}

    def _at_end(self, w: FollowedFile) -> None:
        """Nothing more to read now: close a deleted file, release a rotated one after rotate_wait."""
        if w.gone:
            self._finish(w, "deleted")
        elif w.away_since is not None and time.monotonic() - w.away_since >= self.cfg.rotate_wait:
            self._finish(w, "rotated")

    def _finish(self, w: FollowedFile, why: str) -> None:
        if w.splitter.buffered and not self._failed:
            # The writer is done with it: a last line without a newline is still a line.
            start, lines = w.splitter.feed(b"\n")
            if lines:
                self._emit(w, start, lines)
        log.info(
            "input %s: file %s (inode %d) %s; read to offset %d and closed",
            self.name,
            w.path,
            w.key[1],
            why,
            w.read_pos,
        )
        self._close(w)
        del self.files[w.key]
        if self._by_path.get(w.path) == w.key:
            del self._by_path[w.path]
        if why == "rotated" and not self.cfg.follow_inodes:
            self.released[w.key] = FilePosition(w.path, w.read_pos, released=True)
        self._pos_changed = True

    def _close(self, w: FollowedFile) -> None:
        if w.close():
            self.stats.files_closed += 1

    # -- finding files -----------------------------------------------------

    async def _glob(self) -> dict[str, os.stat_result]:
        """What the globs match now, found in a thread: with 15,000 files a glob, a stat and a
        realpath each take the loop (and the acks of a forward input beside) for a second."""
        self.stats.scans += 1
        matches = await asyncio.to_thread(self.finder.glob)
        self._scanned_at = time.monotonic()
        return matches

    def _scan(self, matches: dict[str, os.stat_result], initial: bool = False) -> None:
        """Pick up new files, notice renamed and vanished ones, from what the globs matched."""
        by_key: dict[FileKey, str] = {}
        for path, st in matches.items():
            by_key.setdefault((st.st_dev, st.st_ino), path)
        now = time.monotonic()
        for key, w in self.files.items():
            found = by_key.get(key)
            if found == w.path:
                continue
            if found is None and w.deleted():
                w.gone = True
            if found is not None and self.cfg.follow_inodes:
                self._by_path.pop(w.path, None)
                w.path = found  # the same file under its rotated name; its tag stays
                self._by_path[found] = key
                self._pos_changed = True
                continue
            if w.away_since is None:
                w.away_since = now
                self.stats.rotations += 1
                if self._by_path.get(w.path) == key:
                    del self._by_path[w.path]
                log.info(
                    "input %s: file %s was rotated away; reading it to its end within rotate_wait (%gs)",
                    self.name,
                    w.path,
                    self.cfg.rotate_wait,
                )
            self._dirty[key] = None
        for key, path in by_key.items():
            if key not in self.files and key not in self.released:
                self._open(key, path, matches[path], initial)
        for key in [k for k in self.released if k not in by_key]:
            del self.released[key]
            self._pos_changed = True
        self._watch_roots()

    def _open(self, key: FileKey, path: str, st: os.stat_result, initial: bool) -> None:
        tag = expand_tag(self.cfg.tag, path, self.tag_regex)
        if tag is None:
            self.finder.say_once(
                path, "input %s: file %s: tag_regex does not match its path; not read", self.name, path
            )
            return
        try:
            # O_NONBLOCK: a FIFO put in the glob's place between the stat and the open must not hang us.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            log.warning("input %s: file %s: cannot open: %s", self.name, path, exc.strerror)
            return
        fst = os.fstat(fd)
        if (fst.st_dev, fst.st_ino) != key or not stat.S_ISREG(fst.st_mode):  # replaced since the glob
            os.close(fd)
            self._scan_requested = True
            return
        saved = self._saved.get(key)
        if saved is not None and same_file(fd, saved, fst.st_size):
            if saved.released:
                os.close(fd)
                self.released[key] = saved
                return
            # The same file; if it was truncated while the agent was away, all of it is new.
            offset = saved.offset if line_start(fd, saved.offset, fst.st_size) else 0
            fp_len, fp = saved.fp_len, saved.fp
        elif key[1] in self._imported:
            offset = self._imported_offset(self._imported[key[1]], path, fd, fst.st_size)
            fp_len, fp = 0, 0
        else:
            offset = (
                0
                if self.cfg.read_from_head or not initial
                else after_last_newline(fd, fst.st_size, self.cfg.max_line_size)
            )
            fp_len, fp = 0, 0
        if offset and not fp_len:
            head = os.pread(fd, min(FINGERPRINT_BYTES, offset), 0)
            fp_len, fp = len(head), fingerprint(head)
        w = FollowedFile(key, path, tag, fd, offset, self.cfg.max_line_size, FilePosition(path, offset, fp_len, fp))
        self.files[key] = w
        self._by_path[path] = key
        self._dirty[key] = None
        self._pos_changed = True
        self.stats.files_opened += 1
        log.info("input %s: following %s from offset %d as tag %s", self.name, path, offset, tag)

    def _imported_offset(self, imported: ImportedPosition, path: str, fd: int, size: int) -> int:
        """Where another agent had read this file to, if that can be where a line starts; else 0
        (read again, duplicates at worst: never a gap)."""
        if imported.offset <= size and line_start(fd, imported.offset, size):
            log.info(
                "input %s: file %s starts at offset %d, from %s (as %s)",
                self.name,
                path,
                imported.offset,
                imported.source,
                imported.path,
            )
            return imported.offset
        log.warning(
            "input %s: file %s: offset %d from %s is past its end or not where a line starts; reading it from 0",
            self.name,
            path,
            imported.offset,
            imported.source,
        )
        return 0

    def _stat_all(self) -> None:
        """The safety net under inotify: what changed size, moved or was deleted."""
        for key, w in self.files.items():
            try:
                st = os.stat(w.path)
            except OSError:
                st = None
            if st is not None and (st.st_dev, st.st_ino) == key and w.away_since is None:
                if st.st_size != w.read_pos:
                    self._dirty[key] = None
                continue
            self._dirty[key] = None
            if w.deleted():
                w.gone = True
            elif w.away_since is None:
                self._scan_requested = True

    def _checkpoint(self, force: bool = False) -> None:
        if not (force or self._pos_changed) or self._durable_at is None:
            return
        positions = {key: w.pos for key, w in self.files.items()}
        positions.update(self.released)
        try:
            self.pos_file.save(positions, self._durable_at)
        except OSError as exc:
            log.error("input %s: cannot write position file %s: %s", self.name, self.pos_file.path, exc)
            return
        self._pinned = self._durable_at
        self._pos_changed = False

    # -- inotify -----------------------------------------------------------

    def _watch_roots(self) -> None:
        """Watch the directory under each glob that exists (the scan covers the others)."""
        for pattern in self.cfg.path:
            root, recursive = watch_root(pattern)
            if root in self._roots or not os.path.isdir(root):
                continue
            self._roots.add(root)
            self._spawn(watch(root, recursive, self._changed, self._wake.set), f"tail-watch {root}")
            # A watch takes a moment to start in its thread: look again once it surely runs,
            # for a file created in between (else it would wait for refresh_interval).
            asyncio.get_running_loop().call_later(WATCH_SETTLE, self._request_scan)

    def _request_scan(self) -> None:
        self._scan_requested = True
        self._wake.set()

    def _changed(self, path: str, modified: bool) -> None:
        """An inotify event: a followed file to read, or a name that may change the followed set.
        Any other (a write to an unfollowed file in a watched directory) asks for nothing."""
        key = self._by_path.get(path)
        if key is not None and modified:
            self._dirty[key] = None
        elif key is not None or self.finder.may_match(path) or (not modified and os.path.isdir(path)):
            self._scan_requested = True


def build(cfg: TailInputConfig, ingest: Ingest, data_dir: Path) -> TailInput:
    return TailInput(cfg, ingest, data_dir)
