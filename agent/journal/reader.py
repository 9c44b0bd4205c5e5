"""Reading the journal from a cursor, in another process than the writer.

The writer appends whole records with one write per group, so a reader may
catch a record in the middle of being written: a record that is incomplete,
or whose checksum fails, *at the end of the file* is simply not there yet.
A bad record with more bytes after it is corruption: it is logged and the
reader moves on to the next segment.

A segment is finished once a newer one exists (the writer never goes back),
so the reader moves on only after reading the old one to its end.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from agent.journal.cursor import Position
from agent.journal.record import HEADER_SIZE, MAX_RECORD, RECORD_HEADER, RECORD_OVERHEAD, Torn, is_filler, iter_records
from agent.journal.segment import list_segments, segment_path

log = logging.getLogger("agent.journal")


@dataclass(slots=True)
class JournalRecord:
    payload: bytes
    next: Position  # the position after this record
    appended_ns: int = 0  # when it was journaled


class JournalReader:
    def __init__(self, directory: Path, position: Position | None = None):
        self.directory = Path(directory)
        self.position = position
        self.corrupt_skips = 0
        self._file: BinaryIO | None = None
        self._file_seq = -1

    def start_position(self) -> Position:
        seqs = list_segments(self.directory)
        return Position(seqs[0], HEADER_SIZE) if seqs else Position(1, HEADER_SIZE)

    def read(self, max_bytes: int = 4 << 20) -> list[JournalRecord]:
        """Records from the current position, up to about ``max_bytes``; [] when caught up."""
        while True:
            if self.position is None:
                self.position = self.start_position()
            records, moved = self._read_segment(self.position, max_bytes)
            if records or not moved:
                return records

    def _open(self, seq: int) -> BinaryIO:
        if self._file is None or self._file_seq != seq:
            if self._file is not None:
                self._file.close()
            self._file = open(segment_path(self.directory, seq), "rb")
            self._file_seq = seq
        return self._file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self._file_seq = -1

    def _newer_segment(self, seq: int) -> int | None:
        for s in list_segments(self.directory):
            if s > seq:
                return s
        return None

    def _read_segment(self, pos: Position, max_bytes: int) -> tuple[list[JournalRecord], bool]:
        """Read from the segment of ``pos`` (the current position); returns (records, moved to another segment)."""
        try:
            f = self._open(pos.segment)
        except FileNotFoundError:
            newer = self._newer_segment(pos.segment)
            if newer is None:
                return [], False
            if pos.offset > HEADER_SIZE:
                log.warning("journal: segment %d is gone; continuing at segment %d", pos.segment, newer)
            self.position = Position(newer, HEADER_SIZE)
            return [], True
        offset = max(pos.offset, HEADER_SIZE)
        size = os.fstat(f.fileno()).st_size
        if offset >= size:
            # The segment is finished only once a newer one exists; check that,
            # then look at the size again (the last write may have landed since).
            newer = self._newer_segment(pos.segment)
            if newer is None or os.fstat(f.fileno()).st_size > offset:
                return [], False
            self.position = Position(newer, HEADER_SIZE)
            return [], True
        f.seek(offset)
        data = f.read(max_bytes)
        records: list[JournalRecord] = []
        passed = offset  # past the records read and the fillers skipped
        try:
            for end, payload, appended_ns in iter_records(data, 0, base=offset):
                passed = end
                if not is_filler(payload):  # where recovery set damaged bytes aside
                    records.append(JournalRecord(payload, Position(pos.segment, end), appended_ns))
        except Torn as torn:
            if not records and passed == offset:
                after = self._after_torn(f, pos.segment, torn, offset)
                if after is None:
                    return [], True
                records = after
        if records:
            self.position = records[-1].next
        elif passed > offset:
            self.position = Position(pos.segment, passed)
            return [], True  # only fillers: read on
        return records, False

    def _after_torn(self, f: BinaryIO, seq: int, torn: Torn, offset: int) -> list[JournalRecord] | None:
        """Nothing whole at ``offset``: a record bigger than max_bytes, a write in progress, or damage."""
        size = os.fstat(f.fileno()).st_size
        f.seek(offset)
        # Only the one record its header names: the rest of the segment (up to segment_bytes) read
        # for it cost a reader with a small max_bytes the whole segment's memory and CPU per read.
        data = f.read(RECORD_OVERHEAD)
        if len(data) == RECORD_OVERHEAD:
            length = RECORD_HEADER.unpack_from(data)[0]
            if length <= MAX_RECORD:  # else iter_records names it implausible
                data += f.read(min(length, max(size - offset - RECORD_OVERHEAD, 0)))
        try:
            for end, payload, appended_ns in iter_records(data, 0, base=offset):
                if is_filler(payload):
                    self.position = Position(seq, end)
                    return None
                return [JournalRecord(payload, Position(seq, end), appended_ns)]
        except Torn as again:
            torn = again
        newer = self._newer_segment(seq)
        if newer is None:
            return []  # still being written
        # Finished segment with a bad record: damage on disk. Skip the rest.
        self.corrupt_skips += 1
        log.error(
            "journal: segment %d: %s at byte %d; skipping to segment %d",
            seq,
            torn.reason,
            torn.offset,
            newer,
        )
        self.position = Position(newer, HEADER_SIZE)
        return None
