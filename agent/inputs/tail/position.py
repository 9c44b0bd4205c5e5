"""Where the tail input stopped in each file: the position file and its journal markers.

A position is ``(device, inode) → (path, offset, fingerprint)``; ``offset``
is where the next unread line starts. Two records hold positions, so that a
line is neither read twice nor lost whenever the process dies (kill -9
included):

* Every batch of lines is journaled together with a *marker*: a journal
  batch targeted at the input's own name, holding the file's new position.
  Names are unique across inputs and outputs, so no output ever delivers a
  marker. The marker is submitted right behind its lines, with no ``await``
  between, so both go into the same journal group: durable together, or
  failed together.
* The position file (JSON, written with the atomic recipe, at most once a
  second) holds every file's position as of a journal position, and only
  positions whose markers are durable. It also pins that journal position:
  segments from there on are kept until the next checkpoint.

At start the input loads the position file, then applies the markers
journaled after its journal position: a second or so of journal to read.

The fingerprint (CRC32 of a file's first bytes) tells a file apart from a
later one that got the same inode (ext4 reuses them at once), and a file
truncated and written again past the old offset from one that only grew.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import msgspec
import orjson

from agent.fsutil import atomic_write
from agent.journal.cursor import Position
from agent.journal.reader import JournalReader
from agent.journal.record import batch_entries, batch_target
from agent.protocol.event_time import pack_event_time

log = logging.getLogger("agent.input.tail")

POS_VERSION = 1
FINGERPRINT_BYTES = 64

FileKey = tuple[int, int]  # (st_dev, st_ino)


@dataclass(slots=True)
class FilePosition:
    path: str
    offset: int
    fp_len: int = 0  # how many leading bytes the fingerprint covers
    fp: int = 0
    released: bool = False  # rotated away and read to the end: never read again while it exists


def fingerprint(head: bytes) -> int:
    return zlib.crc32(head)


class PositionFile:
    def __init__(self, path: Path, input_name: str):
        self.path = Path(path)
        self.input_name = input_name

    def load(self) -> tuple[dict[FileKey, FilePosition], Position | None]:
        """(positions, the journal position they hold as of); ({}, None) for a first start."""
        try:
            data = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}, None
        except (OSError, orjson.JSONDecodeError) as exc:
            # Written atomically, so this is outside damage. Starting from
            # nothing re-reads files (duplicates), it never skips lines.
            log.error(
                "input %s: position file %s is unreadable (%s); starting without it", self.input_name, self.path, exc
            )
            return {}, None
        positions = {}
        for f in data.get("files", []):
            positions[(f["dev"], f["ino"])] = FilePosition(
                f["path"], f["offset"], f.get("fp_len", 0), f.get("fp", 0), f.get("released", False)
            )
        j = data.get("journal")
        return positions, Position(j["segment"], j["offset"]) if j else None

    def save(self, positions: dict[FileKey, FilePosition], journal_position: Position) -> None:
        files = [
            {
                "dev": dev,
                "ino": ino,
                "path": p.path,
                "offset": p.offset,
                "fp_len": p.fp_len,
                "fp": p.fp,
                "released": p.released,
            }
            for (dev, ino), p in positions.items()
        ]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(
            self.path,
            orjson.dumps(
                {
                    "version": POS_VERSION,
                    "input": self.input_name,
                    "journal": {"segment": journal_position.segment, "offset": journal_position.offset},
                    "files": files,
                }
            ),
        )


# -- markers -----------------------------------------------------------------


class _Marker(msgspec.Struct, array_like=True):
    dev: int
    ino: int
    path: str
    offset: int
    fp_len: int
    fp: int
    released: bool


_encode_marker = msgspec.msgpack.Encoder().encode
_decode_entry = msgspec.msgpack.Decoder(tuple[msgspec.msgpack.Ext, _Marker])


def marker_entry(key: FileKey, pos: FilePosition, time_ns: int) -> bytes:
    """One forward entry ``[EventTime, marker]`` for the journal."""
    return (
        b"\x92"
        + pack_event_time(time_ns)
        + _encode_marker(_Marker(key[0], key[1], pos.path, pos.offset, pos.fp_len, pos.fp, pos.released))
    )


def replay_markers(journal_dir: Path, since: Position, input_name: str, positions: dict[FileKey, FilePosition]) -> int:
    """Apply this input's markers journaled from ``since`` on; return how many."""
    reader = JournalReader(journal_dir, since)
    applied = 0
    try:
        while records := reader.read():
            for r in records:
                if batch_target(r.payload) != input_name:
                    continue
                _, m = _decode_entry.decode(batch_entries(r.payload))
                positions[(m.dev, m.ino)] = FilePosition(m.path, m.offset, m.fp_len, m.fp, m.released)
                applied += 1
    finally:
        reader.close()
    return applied
