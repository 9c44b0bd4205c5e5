"""The ledger: every purchase by day, game and output, in one SQLite file under ``data_dir/state``.

Rows of ``counts`` say how many purchases of a (day, game, output) are in one
state (``in``, ``delivered``, ``refused``, ``skipped``; the last two by reason),
by currency, with their revenue as exact decimal text. ``pending`` is what is
in and not yet settled: ``in - delivered - Σ refused - Σ skipped``.

Each count is added where the state it describes becomes durable, in the same
SQLite transaction as a *mark*: the journal position it has counted through.

* ``in``: whoever advances the ``in`` mark (the first delivery process, every
  second; any output's settle, before its own counts) reads the journal from
  the mark and counts each purchase once for every output its tag routes to.
  Recounting after a kill starts from the mark, so nothing is counted twice
  and nothing is missed; the main process keeps the segments after the mark.
* an output's settle (agent/delivery/runner.py, before its cursor is saved):
  what it delivered, refused and skipped since its own mark. After a kill it
  sends again from its cursor, which is never past its mark; what it sends
  again up to the mark is not counted again.
* a replayed dead letter (journaled again for its one output) moves from
  ``refused`` back to pending when that output settles it, found by
  (output, app_id, transaction_id) in ``refusals``.

So ``in = delivered + refused + skipped + pending`` holds after a SIGKILL of
any process at any moment. ``totals`` adds up the same counts for every day
and is never swept: the Prometheus counters come from it.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from agent.journal.cursor import Position
from agent.journal.reader import JournalReader
from agent.ledger.plan import LedgerPlan
from agent.ledger.tally import Facts, Tally
from agent.transaction import ThreadCursors, transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counts (
    day TEXT NOT NULL, game TEXT NOT NULL, output TEXT NOT NULL, state TEXT NOT NULL,
    reason TEXT NOT NULL, currency TEXT NOT NULL, n INTEGER NOT NULL, amount TEXT NOT NULL,
    PRIMARY KEY (day, game, output, state, reason, currency)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS totals (
    game TEXT NOT NULL, output TEXT NOT NULL, state TEXT NOT NULL, currency TEXT NOT NULL,
    n INTEGER NOT NULL, amount TEXT NOT NULL,
    PRIMARY KEY (game, output, state, currency)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS duplicates (
    day TEXT NOT NULL, game TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (day, game)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS refusals (
    output TEXT NOT NULL, app TEXT NOT NULL, txn TEXT NOT NULL, reason TEXT NOT NULL,
    day TEXT NOT NULL, game TEXT NOT NULL, currency TEXT NOT NULL, amount TEXT NOT NULL,
    PRIMARY KEY (output, app, txn)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS marks (
    name TEXT PRIMARY KEY, segment INTEGER NOT NULL, offset INTEGER NOT NULL, at_ns INTEGER NOT NULL);
"""

START, IN = "start", "in"
T = TypeVar("T")
READ_BYTES = 1 << 20


def _dec_add(a: str | None, b: str | None) -> str:
    return str(Decimal(a or 0) + Decimal(b or 0))


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    else:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600))  # private before SQLite opens it
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # a commit survives a kill; only power loss takes it back
        # A settle every few milliseconds: keep the write-ahead log small (it shares data_dir's disk
        # with the journal; the default lets it grow to 4 MiB and stay).
        db.execute("PRAGMA wal_autocheckpoint=256")
        db.execute("PRAGMA journal_size_limit=1048576")
        db.executescript(_SCHEMA)
    db.execute("PRAGMA busy_timeout=30000")  # the processes take turns; a settle may read the journal
    db.create_function("dec_add", 2, _dec_add, deterministic=True)
    return db


class Ledger:
    """One process's connection to the ledger (one per thread that writes)."""

    def __init__(self, path: Path, plan: LedgerPlan, journal_dir: Path):
        self.path = path
        self.plan = plan
        self.journal_dir = journal_dir
        self.db = connect(path)
        self._cursors = ThreadCursors(self.db)

    @property
    def sql(self) -> sqlite3.Cursor:
        """This thread's cursor: the writer thread settles while the event loop reads marks."""
        return self._cursors.get()

    def close(self) -> None:
        self.db.close()

    # -- marks -------------------------------------------------------------------------

    def mark(self, name: str) -> tuple[Position, int] | None:
        return read_mark(self.sql, name)

    def _set_mark(self, name: str, position: Position, at_ns: int) -> None:
        self.sql.execute(
            "INSERT INTO marks VALUES (?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
            "segment = excluded.segment, offset = excluded.offset, at_ns = excluded.at_ns",
            (name, position.segment, position.offset, at_ns),
        )

    def begin(self, journal_end: Position) -> Position:
        """At the main process's start, after journal recovery: where counting starts. A new ledger
        starts at the journal's end (what came before was never counted in); one whose marks are
        past the journal's end (a journal removed by hand) starts again there."""
        with transaction(self.sql, immediate=True):
            start = self.mark(START)
            if start is None or start[0] > journal_end:
                self.sql.execute("DELETE FROM marks")
                self._set_mark(START, journal_end, time.time_ns())
                self._set_mark(IN, journal_end, time.time_ns())
                return journal_end
            return start[0]

    def output_mark(self, output: str) -> tuple[Position, int]:
        """What ``output`` has settled through, and the wall clock of its last settled send."""
        found = self.mark(f"out:{output}")
        if found is not None:
            return found
        start = self.mark(START)
        return (start[0] if start else Position(0, 0)), 0

    # -- counting ------------------------------------------------------------------------

    def advance_in(self, up_to: Position | None = None) -> int:
        """Count in what the journal holds past the ``in`` mark (up to ``up_to``); how many purchases."""
        with transaction(self.sql, immediate=True):
            return self._advance_in(up_to)

    def _advance_in(self, up_to: Position | None) -> int:
        mark = self.mark(IN)
        if mark is None or (up_to is not None and mark[0] >= up_to):
            return 0
        reader = JournalReader(self.journal_dir, mark[0])
        tally = Tally()
        counted, position = 0, mark[0]
        try:
            while True:
                records = reader.read(READ_BYTES)
                if not records:
                    break
                for r in records:
                    if up_to is not None and r.next > up_to:
                        break
                    counted += self.plan.count_in(r, tally)
                    position = r.next
                else:
                    continue
                break
        finally:
            reader.close()
        if position != mark[0]:
            self._add(tally, "")
            self._set_mark(IN, position, time.time_ns())
        return counted

    def settle(self, output: str, tally: Tally, position: Position, finished_ns: int) -> bool:
        """Add what ``output`` settled through ``position``; False if that was counted already."""
        with transaction(self.sql, immediate=True):
            mark = self.mark(f"out:{output}")
            if mark is not None and mark[0] >= position:
                return False
            self._advance_in(position)
            self._replayed(output, tally)
            self._add(tally, output)
            for app, txn, reason, f in tally.refusals:
                self.sql.execute(
                    "INSERT OR REPLACE INTO refusals VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (output, app, txn, reason, f.day, f.game, f.currency, str(f.amount)),
                )
            self._set_mark(f"out:{output}", position, finished_ns)
        return True

    def _replayed(self, output: str, tally: Tally) -> None:
        """A replayed dead letter leaves ``refused`` (it is pending again); one the ledger does not
        know as refused (refused before the ledger began) comes in now."""
        for app, txn, f in tally.replayed:
            row = self.sql.execute(
                "DELETE FROM refusals WHERE output = ? AND app = ? AND txn = ? RETURNING reason, day, game, currency, "
                "amount",
                (output, app, txn),
            ).fetchone()
            if row is None:
                tally.add("in", "", f)
            else:
                tally.add("refused", row[0], Facts(row[1], row[2], row[3], Decimal(row[4])), -1)

    def _add(self, tally: Tally, output: str) -> None:
        """``output`` "" means: each row's own (the ``in`` counts name theirs in the reason slot)."""
        rows = []
        for state, reason, day, game, currency, n, amount in tally.rows():
            name, why = (reason, "") if not output else (output, reason)
            rows.append((day, game, name, state, why, currency, n, amount))
        self.sql.executemany(
            "INSERT INTO counts VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
            "n = n + excluded.n, amount = dec_add(amount, excluded.amount)",
            rows,
        )
        self.sql.executemany(
            "INSERT INTO totals VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
            "n = n + excluded.n, amount = dec_add(amount, excluded.amount)",
            [(game, name, state, currency, n, amount) for _, game, name, state, _, currency, n, amount in rows],
        )

    def add_duplicates(self, by_day_game: dict[tuple[str, str], int]) -> None:
        with transaction(self.sql, immediate=True):
            self.sql.executemany(
                "INSERT INTO duplicates VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET n = n + excluded.n",
                [(day, game, n) for (day, game), n in by_day_game.items()],
            )

    def sweep(self, oldest_day: str) -> int:
        """Days before ``oldest_day`` go (``ledger_retention``); the totals stay."""
        with transaction(self.sql, immediate=True):
            n = self.sql.execute("DELETE FROM counts WHERE day < ?", (oldest_day,)).rowcount
            self.sql.execute("DELETE FROM duplicates WHERE day < ?", (oldest_day,))
            self.sql.execute("DELETE FROM refusals WHERE day < ?", (oldest_day,))
        return n


def read_mark(db: sqlite3.Connection | sqlite3.Cursor, name: str) -> tuple[Position, int] | None:
    """Where the mark ``name`` stands, and the wall clock it was set at."""
    row = db.execute("SELECT segment, offset, at_ns FROM marks WHERE name = ?", (name,)).fetchone()
    return None if row is None else (Position(row[0], row[1]), row[2])


def with_ledger(path: Path, action: Callable[[sqlite3.Connection], Any]) -> Any:
    """``action`` on a read-only connection (the CLI, the monitor), closed after."""
    db = connect(path, readonly=True)
    try:
        return action(db)
    finally:
        db.close()


class LedgerWriter:
    """A process's ledger writes, one at a time in a thread of their own: SQLite's waits for the
    other processes and a settle's journal reads never hold up the event loop."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")

    async def call(self, action: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, action, *args)

    def shrink(self) -> None:
        """The connection's page cache back to the allocator once the process is quiet: every
        purchase of a burst is a row, and the cache keeps its pages until it is told."""
        try:
            self._thread.submit(lambda: self.ledger.sql.execute("PRAGMA shrink_memory")).result(timeout=1.0)
        except TimeoutError:
            pass  # a settle still running: the next trim has it

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        self.ledger.close()
