"""Where each followed file stands durably, and what happens when a journal write fails.

A file's position moves only once the lines before it are durable: each batch of lines is
journaled with a marker of the position after it (one journal group, so a kill -9 keeps both
or neither), and the position moves when both are durable. The position file is written
from those positions now and then (``checkpoint``); after a crash the markers newer than it
are read back from the journal (position.py, ``replay_markers``), which is why the journal
keeps the segments from the position file's moment on (``pinned``).

When a write fails, reading stops until every batch in flight has settled; then every file
goes back to its last durable position and is read again from there (``rewind_all``):
duplicates, never a loss.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial

from agent.ingest import when_all
from agent.inputs.tail.fileset import FileSet
from agent.inputs.tail.followed import FollowedFile
from agent.inputs.tail.position import FilePosition, PositionFile, marker_entry
from agent.journal.cursor import Position
from agent.journal.journal import Journal

log = logging.getLogger("agent.input.tail")


class Checkpointer:
    def __init__(self, name: str, journal: Journal, pos_file: PositionFile, files: FileSet, wake: Callable[[], None]):
        self.name = name
        self.journal = journal
        self.pos_file = pos_file
        self.files = files
        self.wake = wake  # the input loop: a batch settled
        self.inflight = 0  # batches waiting for the journal
        self.failed = False  # a write failed: read nothing until the batches in flight settle
        self.durable_at: Position | None = None  # journal position of the newest durable marker
        self.pinned: Position | None = None  # the journal position the position file is as of

    def start(self) -> None:
        """The first scan is done: what the position file says from now on starts here."""
        self.pinned = self.durable_at = self.journal.end_position
        self.checkpoint(force=True)

    def submit_marker(
        self, followed: FollowedFile, pos: FilePosition, now: int, after: asyncio.Future | None = None
    ) -> asyncio.Future:
        """Journal ``followed``'s next position; it counts as durable once ``after`` (the lines
        before it, journaled or dead-lettered) is too."""
        fut = self.journal.submit(self.name, marker_entry(followed.key, pos, now), 1, target=self.name)
        if after is not None:
            fut = when_all([fut, after])
        self.inflight += 1
        fut.add_done_callback(partial(self._on_durable, followed, pos, followed.generation))
        return fut

    def _on_durable(self, followed: FollowedFile, pos: FilePosition, generation: int, fut: asyncio.Future) -> None:
        self.inflight -= 1
        self.wake()
        if fut.cancelled() or fut.exception() is not None:
            if not self.failed:
                log.error(
                    "input %s: journal write failed (%s); reading stops until the batches in flight "
                    "settle, then resumes from the last durable positions",
                    self.name,
                    "cancelled" if fut.cancelled() else fut.exception(),
                )
            self.failed = True
            return
        # A marker whose lines went to the dead-letter thread may settle after a later one.
        self.durable_at = max(fut.result(), self.durable_at or fut.result())
        if self.failed or generation != followed.generation:
            return
        followed.pos = pos
        self.files.changed = True

    def rewind_all(self) -> None:
        """After a failed journal write: every file back to its durable position; markers beyond it void."""
        for followed in self.files.files.values():
            followed.splitter.reset(followed.pos.offset)
            followed.read_pos = followed.pos.offset
            self.files.dirty[followed.key] = None
        self.durable_at = self.journal.end_position
        self.failed = False
        self.checkpoint(force=True)
        log.info("input %s: reading again from the last durable positions", self.name)

    def checkpoint(self, force: bool = False) -> None:
        if not (force or self.files.changed) or self.durable_at is None:
            return
        try:
            self.pos_file.save(self.files.positions(), self.durable_at)
        except OSError as exc:
            log.error("input %s: cannot write position file %s: %s", self.name, self.pos_file.path, exc)
            return
        self.pinned = self.durable_at
        self.files.changed = False
