"""One SQLite transaction on a connection that autocommits each statement otherwise
(``isolation_level=None``): the mirror state's and the ledger's."""

from __future__ import annotations

import sqlite3
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
