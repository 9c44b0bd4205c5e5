"""Positions another agent left behind: Fluentd in_tail's pos_file and Fluent Bit in_tail's DB.

They are read once, at the first start of a tail input that has no position
file of its own. A file found then whose inode one of them names starts at the
offset the other agent had reached, so a host switches without reading its
files again from the start (duplicates) or from the end (a gap). Once the
input has written its own position file they are never read again: an inode
reused later by another file must not inherit an old offset.

* Fluentd (lib/fluent/plugin/in_tail/position_file.rb): one line per file,
  ``path<TAB>offset<TAB>inode``, both numbers as 16 hex digits; an entry whose
  offset is ``ffffffffffffffff`` is one Fluentd no longer watches.
* Fluent Bit (plugins/in_tail/tail_sql.h): SQLite table ``in_tail_files``
  (id, name, offset, inode, created, rotated); for one inode the newest row
  (highest id) counts, as Fluent Bit's own lookup orders it.

Both key files by inode alone, without the device: so does the import.

Either is read in a thread, and bounded: a regular file only (a FIFO would block the read),
at most MAX_IMPORT_BYTES and MAX_POSITIONS, a table (not a VIEW) queried for at most
MAX_QUERY_SECONDS.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from agent.errors import ConfigError
from agent.fsutil import NotReadable, read_regular

UNWATCHED = 0xFFFF_FFFF_FFFF_FFFF
# Bounds on what an import may cost: files no host tails, bytes no pos_file of them reaches,
# and the time one query may take (the start waits for it, in a thread).
MAX_POSITIONS = 1_000_000
MAX_IMPORT_BYTES = 256 * 1024 * 1024
MAX_QUERY_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class ImportedPosition:
    path: str  # the name the other agent knew the file by (a rotated file has moved since)
    offset: int
    source: str  # where it came from, for the log line


def read_fluentd_pos_file(path: Path) -> dict[int, ImportedPosition]:
    """inode → position, from a Fluentd in_tail pos_file; unwatched entries left out."""
    text = _read_regular(path, "import_pos_file").decode("utf-8", errors="surrogateescape")
    found: dict[int, ImportedPosition] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rsplit("\t", 2)  # a path may hold a tab; the two numbers never do
        try:
            name, offset, inode = parts[0], int(parts[1], 16), int(parts[2], 16)
        except (IndexError, ValueError):
            raise ConfigError(f"import_pos_file {path}: line {number} is not 'path<TAB>offset<TAB>inode'") from None
        if offset == UNWATCHED:
            found.pop(inode, None)
            continue
        found[inode] = ImportedPosition(name, offset, f"Fluentd pos_file {path}")
        if len(found) > MAX_POSITIONS:
            raise ConfigError(f"import_pos_file {path}: more than {MAX_POSITIONS} files; not a pos_file")
    return found


def _read_regular(path: Path, option: str) -> bytes:
    """At most MAX_IMPORT_BYTES of a regular file (agent/fsutil.py: no FIFO, no device)."""
    try:
        return read_regular(path, MAX_IMPORT_BYTES)
    except OSError as exc:
        raise ConfigError(f"{option} {path}: cannot read it: {exc.strerror}") from None
    except NotReadable as exc:
        raise ConfigError(f"{option} {path}: {exc}; not a position file") from None


def read_fluentbit_db(path: Path) -> dict[int, ImportedPosition]:
    """inode → position, from Fluent Bit in_tail's SQLite database (read only)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"import_fluentbit_db {path}: cannot read it: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"import_fluentbit_db {path}: not a regular file")
    deadline = time.monotonic() + MAX_QUERY_SECONDS
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)  # read only; odd names escaped
        try:
            # A table, as Fluent Bit makes it: a VIEW may be anything (an endless recursive CTE).
            kind = db.execute("SELECT type FROM sqlite_master WHERE name = 'in_tail_files'").fetchone()
            if kind != ("table",):
                raise ConfigError(f"import_fluentbit_db {path}: in_tail_files is not a table; not a Fluent Bit DB")
            db.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)
            rows = db.execute(
                "SELECT name, offset, inode FROM in_tail_files ORDER BY id LIMIT ?", (MAX_POSITIONS + 1,)
            ).fetchall()
        finally:
            db.close()
    except sqlite3.OperationalError as exc:
        if time.monotonic() > deadline:
            raise ConfigError(f"import_fluentbit_db {path}: not read within {MAX_QUERY_SECONDS:g}s") from None
        raise ConfigError(f"import_fluentbit_db {path}: not a Fluent Bit tail database: {exc}") from None
    except sqlite3.Error as exc:
        raise ConfigError(f"import_fluentbit_db {path}: not a Fluent Bit tail database: {exc}") from None
    if len(rows) > MAX_POSITIONS:
        raise ConfigError(f"import_fluentbit_db {path}: more than {MAX_POSITIONS} files; not a tail database")
    found: dict[int, ImportedPosition] = {}
    for name, offset, inode in rows:
        if isinstance(inode, int) and isinstance(offset, int) and offset >= 0:
            found[inode] = ImportedPosition(str(name), offset, f"Fluent Bit DB {path}")
    return found


def read_imports(pos_file: Path | None, fluentbit_db: Path | None) -> dict[int, ImportedPosition]:
    """What both sources say, Fluent Bit's over Fluentd's where both name an inode."""
    found: dict[int, ImportedPosition] = {}
    if pos_file is not None:
        found.update(read_fluentd_pos_file(pos_file))
    if fluentbit_db is not None:
        found.update(read_fluentbit_db(fluentbit_db))
    return found
