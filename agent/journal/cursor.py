"""Per-output read positions over the journal, persisted atomically.

A cursor is ``(segment, offset)``: the next record to read. The delivery
process owns the cursor files and writes them with the atomic recipe; the
journal owner (the main process) only reads them to know which segments every
output has passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orjson

from agent.fsutil import atomic_write
from agent.paths import file_name

CURSOR_VERSION = 1


@dataclass(frozen=True, order=True, slots=True)
class Position:
    segment: int
    offset: int


class CursorStore:
    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def path(self, output_name: str) -> Path:
        return self.directory / f"{file_name(output_name)}.json"

    def load(self, output_name: str) -> Position | None:
        try:
            data = orjson.loads(self.path(output_name).read_bytes())
            return Position(int(data["segment"]), int(data["offset"]))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            # Written atomically, so this is outside damage: start from the
            # oldest segment (duplicates, never loss).
            return None

    def save(self, output_name: str, position: Position, *, durable: bool = True) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write(
            self.path(output_name),
            orjson.dumps({"version": CURSOR_VERSION, "segment": position.segment, "offset": position.offset}),
            durable=durable,
        )
