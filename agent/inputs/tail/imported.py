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
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from agent.errors import ConfigError

UNWATCHED = 0xFFFF_FFFF_FFFF_FFFF


@dataclass(frozen=True, slots=True)
class ImportedPosition:
    path: str  # the name the other agent knew the file by (a rotated file has moved since)
    offset: int
    source: str  # where it came from, for the log line


def read_fluentd_pos_file(path: Path) -> dict[int, ImportedPosition]:
    """inode → position, from a Fluentd in_tail pos_file; unwatched entries left out."""
    try:
        text = path.read_text("utf-8", errors="surrogateescape")
    except OSError as exc:
        raise ConfigError(f"import_pos_file {path}: cannot read it: {exc.strerror}") from None
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
    return found


def read_fluentbit_db(path: Path) -> dict[int, ImportedPosition]:
    """inode → position, from Fluent Bit in_tail's SQLite database (read only)."""
    if not path.is_file():
        raise ConfigError(f"import_fluentbit_db {path}: no such file")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)  # read only; odd names escaped
        try:
            rows = db.execute("SELECT name, offset, inode FROM in_tail_files ORDER BY id").fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise ConfigError(f"import_fluentbit_db {path}: not a Fluent Bit tail database: {exc}") from None
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
