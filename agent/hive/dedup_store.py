"""Deduplication of purchases by (app_id, transaction_id, refund) over a persistent window.

A refund carries its purchase's transaction_id, so the refund flag is part of
the key: a purchase and its refund are two events, each delivered once, each
kind in a table of its own. A row holds the app as a 64-bit hash of its app_id,
not the text: an app_id is often 60 characters, twice the transaction_id, and
rows that much shorter halved the cost of a commit (1.65 to 0.86 µs a key) and
cut a lookup's by a quarter. Two apps whose hashes meet (2^-64 for a pair) would
share one window of transaction ids: a purchase of one with the very
transaction_id of the other's would be taken for its duplicate. A store of an
earlier version (the app as text) is rewritten this way when first opened.

A key is *reserved* when a record passes the filter and *committed* to the
SQLite store only once the journal says the record is durable; if the journal
write fails the reservation is released. So a duplicate is dropped only when
the first copy is safely journaled: a sender that resends because it got no
ack is never mistaken for a duplicate. The one window left: a crash between
the journal's fsync and the commit here lets a re-sent copy through again
(a duplicate, never a loss).

Cost, since every purchase passes here: a lookup is one query per app and table
(``txn IN (...)`` over the primary key, in chunks of ``PROBE_CHUNK``), not a
temporary table filled row by row; a commit is one statement over the batch
(``json_each``), run by a thread of its own on a connection of its own (WAL lets it
write while the event loop reads), so the loop never waits on SQLite's B-tree
inserts. A key leaves ``pending`` only once its commit is visible, and a lookup
checks ``pending`` before the store, so a key is always in one or the other. The
window above widens by the writer's queue: milliseconds.

Time: keys are stamped, looked up and swept by :class:`StoreClock`, not by ``time.time()``, so
a step of the wall clock while the agent runs changes no key's age. What a clock can still do:
a wall clock wrong *at start*, ahead of the truth by more than the window, makes every stored
key look old (a re-sent purchase passes once more); one behind the store's high water is taken
as the high water (the downtime counts as none, so keys live longer: never a duplicate).
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from operator import itemgetter
from pathlib import Path

import orjson

log = logging.getLogger("agent.filter.hive")

Key = tuple[str, str, bool]
_TABLES = {False: "purchase_keys", True: "refund_keys"}  # by the refund flag
_TEXT_TABLES = {False: "seen", True: "refunds"}  # earlier versions', the app as text
EXPIRE_INTERVAL = 3600.0  # seconds between sweeps of keys older than the window
_RAISE_HIGH_WATER = (
    "INSERT INTO clock VALUES ('high_water', ?) ON CONFLICT(name) DO UPDATE SET at = max(at, excluded.at)"
)
PROBE_CHUNK = 500  # transaction ids per lookup query; a shorter last chunk is padded, so one statement is cached


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


class StoreClock:
    """The store's time: the wall clock at start (never before the store's high water), advanced
    by the monotonic clock. A step of the wall clock while the agent runs (NTP, an operator, a VM
    resumed) moves nothing here: +8 days for one batch made the sweep forget every key, -30 days
    stamped keys that were forgotten once the clock came back, and a re-sent purchase went
    through twice both ways."""

    def __init__(
        self,
        floor: float = 0.0,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self._monotonic = monotonic
        self._offset = max(wall(), floor) - monotonic()

    def __call__(self) -> float:
        return float(self._monotonic() + self._offset)


class DedupStore:
    def __init__(self, path: Path, window_seconds: float, clock: Callable[[], float] | None = None):
        """``clock``: the store's time (a :class:`StoreClock` over the store's high water unless given)."""
        self.path = Path(path)
        self.window = window_seconds
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = _connect(self.path)  # the event loop's: lookups
        # One cursor a connection, each used by one thread (why: agent/transaction.py, ThreadCursors).
        self._reads = self.db.cursor()
        for table in _TABLES.values():
            self.db.execute(
                f"CREATE TABLE IF NOT EXISTS {table} (app INTEGER NOT NULL, txn TEXT NOT NULL, "
                f"at REAL NOT NULL, PRIMARY KEY (app, txn)) WITHOUT ROWID"
            )
        _rewrite_text_tables(self.db)
        fresh = self.db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'clock'").fetchone()[0] == 0
        self.db.execute("CREATE TABLE IF NOT EXISTS clock (name TEXT PRIMARY KEY, at REAL NOT NULL)")
        if fresh:  # a store of an earlier version: its newest stamp is the high water
            newest = max((self.db.execute(f"SELECT max(at) FROM {t}").fetchone()[0] or 0.0) for t in _TABLES.values())
            self.db.execute("INSERT OR REPLACE INTO clock VALUES ('high_water', ?)", (newest,))
        self.clock = clock or StoreClock(floor=self.high_water())
        self._writer_db = _connect(self.path)  # the writer thread's: commits and sweeps
        self._writes = self._writer_db.cursor()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dedup")
        self._probe_sql = {
            refund: f"SELECT txn FROM {table} WHERE app = ? AND at >= ? AND txn IN ({','.join('?' * PROBE_CHUNK)})"
            for refund, table in _TABLES.items()
        }
        self.pending: set[Key] = set()
        self.closed = False
        self.commit_errors = 0
        self._expired_at = 0.0
        try:  # SQLite's JSON functions are built in since 3.38; an older library inserts row by row
            self.db.execute("SELECT value FROM json_each('[1]')").fetchall()
            self._json_each = True
        except sqlite3.OperationalError:
            self._json_each = False
        self.expire()

    def committed(self, keys: list[Key]) -> set[Key]:
        """The keys already delivered once within the window (check ``pending`` first)."""
        now = self.clock()
        if now - self._expired_at > EXPIRE_INTERVAL:
            self._expired_at = now
            self._writer.submit(self._expire, now)
        since = now - self.window
        found: set[Key] = set()
        for (refund, app), txns in _by_app(keys).items():
            sql, hashed = self._probe_sql[refund], app_hash(app)
            for start in range(0, len(txns), PROBE_CHUNK):
                chunk = txns[start : start + PROBE_CHUNK]
                chunk += [chunk[-1]] * (PROBE_CHUNK - len(chunk))
                found.update((app, txn, refund) for (txn,) in self._reads.execute(sql, (hashed, since, *chunk)))
        return found

    def reserve(self, keys: Iterable[Key]) -> None:
        self.pending.update(keys)

    def commit(self, keys: list[Key]) -> None:
        """Store the keys now, then release them: in the writer thread, whose connection and cursor
        these are (a cursor used by two threads at once is refused)."""
        self._writer.submit(self._commit, keys, self.clock()).result()

    def commit_soon(self, keys: list[Key]) -> None:
        """Store the keys in the writer thread; they stay pending until they are stored."""
        if self.closed:  # its filter was removed by a reload while a batch of it was in flight
            self.release(keys)
            return
        self._writer.submit(self._commit, keys, self.clock())

    def _commit(self, keys: list[Key], now: float) -> None:
        try:
            db = self._writes
            db.execute("BEGIN")
            for (refund, app), txns in _by_app(keys).items():
                table = _TABLES[refund]
                hashed = app_hash(app)
                if self._json_each:  # one statement for the batch, where executemany binds row by row
                    db.execute(
                        f"INSERT OR REPLACE INTO {table} (app, txn, at) SELECT ?, value, ? FROM json_each(?)",
                        (hashed, now, orjson.dumps(txns)),
                    )
                else:
                    db.executemany(f"INSERT OR REPLACE INTO {table} VALUES (?, ?, ?)", [(hashed, t, now) for t in txns])
            db.execute(_RAISE_HIGH_WATER, (now,))
            db.execute("COMMIT")
        except sqlite3.Error as exc:  # a full disk: these stay pending, so still nobody's duplicate here
            self.commit_errors += 1
            log.error("dedup store %s: cannot store %d keys: %s", self.path, len(keys), exc)
            try:
                self._writes.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            return
        self.release(keys)

    def release(self, keys: list[Key]) -> None:
        self.pending.difference_update(keys)

    def expire(self) -> int:
        """Forget keys older than the window (at start, then every EXPIRE_INTERVAL while running)."""
        self._expired_at = self.clock()
        return self._writer.submit(self._expire, self._expired_at).result()

    def _expire(self, now: float) -> int:
        self._writes.execute(_RAISE_HIGH_WATER, (now,))
        return sum(
            self._writes.execute(f"DELETE FROM {table} WHERE at < ?", (now - self.window,)).rowcount
            for table in _TABLES.values()
        )

    def high_water(self) -> float:
        """The latest time the store has stamped or swept by: the next start's clock starts no earlier."""
        row = self._reads.execute("SELECT at FROM clock WHERE name = 'high_water'").fetchone()
        return float(row[0]) if row else 0.0

    def shrink(self) -> None:
        """SQLite's page caches (up to 2 MB a connection) back to the allocator, once the process is quiet."""
        if not self.pending:
            self.pending.clear()  # an emptied set keeps the table its burst grew; clear() gives it back
        self._reads.execute("PRAGMA shrink_memory")
        # Waited for: the trim that follows returns only what is free by then (the writer's cache,
        # given back after it, stayed until the next burst). After a quiet interval its queue is empty.
        try:
            self._writer.submit(self._writes.execute, "PRAGMA shrink_memory").result(timeout=1.0)
        except TimeoutError:
            pass  # a commit still running: the next trim has it

    def flush(self) -> None:
        """Wait until every commit handed to the writer is stored."""
        self._writer.submit(lambda: None).result()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._writer.shutdown(wait=True)
        self._writer_db.close()
        self.db.close()


_APP_HASHES: dict[str, int] = {}


def app_hash(app: str) -> int:
    """The app's column in the store: the first 8 bytes of the app_id's BLAKE2b, as SQLite's signed
    integer (cached: a batch is most often one app's)."""
    hashed = _APP_HASHES.get(app)
    if hashed is None:
        digest = hashlib.blake2b(app.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        hashed = int.from_bytes(digest, "big", signed=True)
        if len(_APP_HASHES) >= 4096:  # app_ids are the senders' to choose: bound what is cached
            _APP_HASHES.clear()
        _APP_HASHES[app] = hashed
    return hashed


def _rewrite_text_tables(db: sqlite3.Connection) -> None:
    """The keys of an earlier version's tables (the app as text) into this one's, in one transaction."""
    present = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    old = {refund: table for refund, table in _TEXT_TABLES.items() if table in present}
    if not old:
        return
    db.create_function("app_hash", 1, app_hash, deterministic=True)
    db.execute("BEGIN")
    for refund, table in old.items():
        db.execute(f"INSERT OR REPLACE INTO {_TABLES[refund]} SELECT app_hash(app), txn, at FROM {table}")
        db.execute(f"DROP TABLE {table}")
    db.execute("COMMIT")
    log.info("dedup store: %s rewritten with the app as a hash", ", ".join(old.values()))


def _by_app(keys: list[Key]) -> dict[tuple[bool, str], list[str]]:
    """Transaction ids by (refund, app): a batch is most often one app's purchases, taken in C."""
    apps, refunds = set(map(itemgetter(0), keys)), set(map(itemgetter(2), keys))
    if len(apps) == 1 and len(refunds) == 1:
        return {(refunds.pop(), apps.pop()): list(map(itemgetter(1), keys))}
    grouped: dict[tuple[bool, str], list[str]] = {}
    for app, txn, refund in keys:
        grouped.setdefault((refund, app), []).append(txn)
    return grouped
