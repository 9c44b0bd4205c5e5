"""What the mirrors remember, in one embedded SQLite file under ``data_dir``.

* ``identities``: (game, scope, did or uid) → the identifiers vendors need
  and Hive records lack (appsflyer_id, advertising_id, idfa, idfv, att),
  learned from ``ha2union.game.<game>.device_ids`` records. An advertising ID
  and an AppsFlyer ID belong to one install on one platform, so the scope is
  the identity record's Hive app_id (``app:<app_id>``), or its platform
  (``platform:A`` / ``platform:I``) when it names no app; a lookup for a
  purchase matches only its own app and platform. A later record adds to or
  replaces what an earlier one said; it never erases a known value with
  nothing.
* ``delivered``: (vendor output, app, key) of every event a vendor accepted,
  so restarts, replays and game servers that send a purchase twice never
  make a second vendor event. Rows older than the retention are purged.
* ``buyers``: (vendor output, app, uid) that bought through this agent, for
  Wisetracker's first-purchase event.

WAL with ``synchronous = NORMAL``: a commit survives the process being
killed (it is in the OS's cache); only a power loss can take the last
commits back, which makes a purchase mirrored twice, never lost.

A vendor's acceptance is recorded the moment its answer arrives, as one
``write`` to an append-only log beside the database (a few µs, where an
SQLite transaction per answer cost about 60 µs); the log is folded into the
database in one transaction every ``FOLD_INTERVAL`` and before the output's
first lookup after a start, so a kill loses no acceptance and the log stays
short. There is one log per output: an output lives in one delivery process,
so no two processes ever share a log (they share the database, which SQLite
serializes). The purge of old rows scans
the table once an hour rather than keeping an index on their age.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agent.mirrors.payloads import ID_FIELDS, PLATFORM_IDS, att_code
from agent.paths import file_name
from agent.transaction import ThreadCursors, transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS identities (
    game TEXT NOT NULL, scope TEXT NOT NULL, kind TEXT NOT NULL, id TEXT NOT NULL,
    appsflyer_id TEXT, advertising_id TEXT, idfa TEXT, idfv TEXT, att INTEGER, updated_ns INTEGER,
    PRIMARY KEY (game, kind, id, scope));
CREATE TABLE IF NOT EXISTS delivered (
    vendor TEXT NOT NULL, app TEXT NOT NULL, key TEXT NOT NULL, at_ns INTEGER NOT NULL,
    PRIMARY KEY (vendor, app, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS buyers (
    vendor TEXT NOT NULL, app TEXT NOT NULL, uid TEXT NOT NULL, PRIMARY KEY (vendor, app, uid));
"""

_STORES: dict[Path, MirrorState] = {}
FOLD_INTERVAL = 10.0  # seconds between folds of the acceptance log into the database


def open_state(path: Path) -> MirrorState:
    """One connection per file in a process: the three mirror outputs share it."""
    path = Path(path).resolve()
    if path not in _STORES:
        _STORES[path] = MirrorState(path)
    return _STORES[path]


class MirrorState:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._cursors = ThreadCursors(self.db)
        self.sql.execute("PRAGMA journal_mode=WAL")
        self.sql.execute("PRAGMA synchronous=NORMAL")
        # Checkpoints fsync the database; fewer, larger ones cost less (measured: folds were 13% of the
        # delivery process's CPU with the default of 1,000 pages and an index on at_ns).
        self.sql.execute("PRAGMA wal_autocheckpoint=16384")
        self.sql.execute("PRAGMA busy_timeout=10000")  # other delivery processes write too
        self.db.executescript(_SCHEMA)
        self._migrate()
        self.path = path
        self._logs: dict[str, int] = {}  # output name → its acceptance log, folded and open
        # In a log, not yet in the database: (vendor, app, key) → when the vendor accepted it.
        self._recent: dict[tuple[str, str, str], int] = {}
        self._folded_at = time.monotonic()

    @property
    def sql(self) -> sqlite3.Cursor:
        return self._cursors.get()

    def shrink(self) -> None:
        """Once the process is quiet: the burst's last acceptances into the database (in memory they
        waited for the next acceptance, and kept the burst's pools), then SQLite's page cache back."""
        self.fold()
        self.sql.execute("PRAGMA shrink_memory")

    def _migrate(self) -> None:
        """Identities of earlier versions had no scope: an IDFA or IDFV makes them iOS, a GAID Android."""
        if not self.sql.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'identity'").fetchone():
            return
        cols = ", ".join(ID_FIELDS)
        with transaction(self.sql):
            self.sql.execute(
                f"INSERT OR IGNORE INTO identities (game, scope, kind, id, {cols}, updated_ns) "
                f"SELECT game, CASE WHEN idfa IS NOT NULL OR idfv IS NOT NULL THEN 'platform:I' ELSE 'platform:A' END, "
                f"kind, id, {cols}, updated_ns FROM identity "
                f"WHERE idfa IS NOT NULL OR idfv IS NOT NULL OR advertising_id IS NOT NULL"
            )
            self.sql.execute("DROP TABLE identity")

    # -- identity ------------------------------------------------------------------

    def learn(self, game: str, record: dict) -> bool:
        """Store what an identity record says; False if it names no did/uid, no identifier, or
        neither an app nor a platform (nor an identifier that only one platform has)."""
        # Identifiers are text (att a code): a map or a list from a sender is its text too, never a
        # value SQLite refuses in the middle of a batch.
        values = {k: v if k == "att" else str(v) for k in ID_FIELDS if (v := record.get(k)) not in (None, "")}
        if "att" in values:
            values["att"] = att_code(values["att"])
            if values["att"] is None:
                del values["att"]
        keys = [(kind, str(record[kind])) for kind in ("did", "uid") if record.get(kind) not in (None, "")]
        scope = identity_scope(record, values)
        if not values or not keys or scope is None:
            return False
        cols = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        updates = ", ".join(f"{c} = excluded.{c}" for c in values)
        now = time.time_ns()
        with transaction(self.sql):
            for kind, ident in keys:
                self.sql.execute(
                    f"INSERT INTO identities (game, scope, kind, id, {cols}, updated_ns) "
                    f"VALUES (?, ?, ?, ?, {marks}, ?) ON CONFLICT (game, kind, id, scope) "
                    f"DO UPDATE SET {updates}, updated_ns = excluded.updated_ns",
                    (game, scope, kind, ident, *values.values(), now),
                )
        return True

    def lookup(self, game: str, app_id: str, platform: str, did: object, uid: object) -> dict[str, Any]:
        """The identifiers known for this purchase's app and platform: of its uid, then of its
        did (which wins); of the platform, then of the app (which wins). Only those of its
        platform are returned."""
        found: dict = {}
        keys = [(kind, str(ident)) for kind, ident in (("uid", uid), ("did", did)) if ident not in (None, "")]
        if not keys:
            return found
        scopes = (f"platform:{platform}", f"app:{app_id}")
        # One query for both: the primary key (game, kind, id, scope) answers each in one seek.
        where = " OR ".join("(kind = ? AND id = ?)" for _ in keys)
        rows = self.sql.execute(
            f"SELECT kind, scope, {', '.join(ID_FIELDS)} FROM identities WHERE game = ? "
            f"AND ({where}) AND scope IN (?, ?)",
            (game, *(v for key in keys for v in key), *scopes),
        ).fetchall()
        for row in sorted(rows, key=lambda r: (r[0] == "did", scopes.index(r[1]))):  # uid, then did
            found.update({k: v for k, v in zip(ID_FIELDS, row[2:]) if v is not None})
        allowed = PLATFORM_IDS.get(platform, frozenset())
        return {k: v for k, v in found.items() if k in allowed}

    # -- delivered -------------------------------------------------------------------

    def was_delivered(self, vendor: str, app: str, key: str) -> bool:
        return self.delivered_at(vendor, app, key) is not None

    def delivered_at(self, vendor: str, app: str, key: str) -> int | None:
        """When (wall clock, ns) the vendor accepted this event; None if it never did."""
        if vendor not in self._logs:
            self._open_log(vendor)
        at = self._recent.get((vendor, app, key))
        if at is not None:
            return at
        row = self.sql.execute(
            "SELECT at_ns FROM delivered WHERE vendor = ? AND app = ? AND key = ?", (vendor, app, key)
        ).fetchone()
        return None if row is None else int(row[0])

    def mark_delivered(self, vendor: str, app: str, key: str) -> None:
        fd = self._logs.get(vendor) or self._open_log(vendor)
        at = time.time_ns()
        # Tabs and newlines cannot occur in the fields (names, app ids, transaction ids); escape anyway.
        line = "\t".join(f.replace("\t", " ").replace("\n", " ") for f in (vendor, app, key)) + f"\t{at}\n"
        os.write(fd, line.encode())
        self._recent[(vendor, app, key)] = at
        if time.monotonic() - self._folded_at > FOLD_INTERVAL:
            self.fold()

    def fold(self) -> None:
        """Move what the logs hold into the database (one transaction), then empty them."""
        self._insert_delivered([(*k, at) for k, at in self._recent.items()])
        for fd in self._logs.values():
            os.ftruncate(fd, 0)
        self._recent.clear()
        self._folded_at = time.monotonic()

    def _open_log(self, vendor: str) -> int:
        """Fold what a previous run of this output logged, then open its log for appends."""
        path = self.path.with_name(f"{self.path.name}.{file_name(vendor)}.delivered.log")
        rows = []
        try:
            for line in path.read_text(errors="replace").splitlines():
                fields = line.split("\t")
                # A torn last line was never acknowledged to anyone: skip it. Three fields: a line
                # written before the acceptance time was logged (its time is the fold's).
                if len(fields) == 4 and fields[3].isdigit():
                    rows.append((*fields[:3], int(fields[3])))
                elif len(fields) == 3:
                    rows.append((*fields, time.time_ns()))
        except FileNotFoundError:
            pass
        self._insert_delivered(rows)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        os.ftruncate(fd, 0)
        self._logs[vendor] = fd
        return fd

    def _insert_delivered(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """(vendor, app, key, accepted at ns) rows."""
        rows = list(rows)
        if rows:
            with transaction(self.sql):
                self.sql.executemany(
                    "INSERT OR IGNORE INTO delivered (vendor, app, key, at_ns) VALUES (?, ?, ?, ?)", rows
                )

    def purge_delivered(self, older_than_s: float) -> int:
        cutoff = time.time_ns() - int(older_than_s * 1e9)
        return self.sql.execute("DELETE FROM delivered WHERE at_ns < ?", (cutoff,)).rowcount

    # -- buyers --------------------------------------------------------------------------

    def has_bought(self, vendor: str, app: str, uid: object) -> bool:
        return (
            self.sql.execute(
                "SELECT 1 FROM buyers WHERE vendor = ? AND app = ? AND uid = ?", (vendor, app, str(uid))
            ).fetchone()
            is not None
        )

    def mark_buyer(self, vendor: str, app: str, uid: object) -> None:
        self.sql.execute("INSERT OR IGNORE INTO buyers (vendor, app, uid) VALUES (?, ?, ?)", (vendor, app, str(uid)))


_PLATFORM_NAMES = {"A": "A", "ANDROID": "A", "AOS": "A", "I": "I", "IOS": "I"}


def identity_scope(record: dict, ids: dict) -> str | None:
    """Where an identity record's identifiers hold: its Hive app, else its platform, else the
    platform its identifiers can only come from (an IDFA or IDFV: iOS; a GAID: Android)."""
    app = record.get("app_id")
    if isinstance(app, str) and app:
        return f"app:{app}"
    platform = record.get("platform")
    if isinstance(platform, str) and platform.strip().upper() in _PLATFORM_NAMES:
        return f"platform:{_PLATFORM_NAMES[platform.strip().upper()]}"
    if "idfa" in ids or "idfv" in ids:
        return "platform:I"
    if "advertising_id" in ids:
        return "platform:A"
    return None
