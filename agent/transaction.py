"""SQLite helpers of the mirror state, the ledger and the dedup store: one transaction on a
connection that autocommits each statement otherwise (``isolation_level=None``), and a cursor per
thread."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def transaction(db: sqlite3.Connection | sqlite3.Cursor, *, immediate: bool = False) -> Iterator[None]:
    """Committed when the block ends, rolled back if it raises. ``immediate`` takes the write lock
    at the start, so that a transaction that reads first never has to give way to another
    process's write half way."""
    db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


class ThreadCursors:
    """A connection's statements run on one cursor per thread, not on Connection.execute's new one
    a statement: sqlite3 keeps a weak reference to every cursor and drops the dead ones only every
    200th, and a burst left them scattered through its pymalloc arenas, holding arenas that had
    little else in them. Per thread, because a cursor used by two threads at once is refused (the
    ledger's writer thread settles while the event loop reads an output's mark)."""

    def __init__(self, db: sqlite3.Connection):
        self._db = db
        self._local = threading.local()

    def get(self) -> sqlite3.Cursor:
        cursor: sqlite3.Cursor | None = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._local.cursor = self._db.cursor()
        return cursor
