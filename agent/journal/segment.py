"""Segment files on disk: naming, listing, and recovery of a torn tail."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from agent.journal.record import HEADER_SIZE, Torn, check_segment_header, iter_records

log = logging.getLogger("agent.journal")

SUFFIX = ".seg"


def segment_path(directory: Path, seq: int) -> Path:
    return directory / f"{seq:016d}{SUFFIX}"


def list_segments(directory: Path) -> list[int]:
    """Sequence numbers of the segments in ``directory``, oldest first."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    seqs = []
    for name in names:
        if name.endswith(SUFFIX) and name[:-len(SUFFIX)].isdigit():
            seqs.append(int(name[:-len(SUFFIX)]))
    seqs.sort()
    return seqs


@dataclass
class SegmentRecovery:
    seq: int
    records: int
    valid_bytes: int
    cut_bytes: int
    reason: str | None


def recover_segment(path: Path, seq: int) -> SegmentRecovery:
    """Scan a segment; cut a torn or corrupt tail off, keep everything before it."""
    data = path.read_bytes()
    bad_header = check_segment_header(data)
    if bad_header:
        if len(data) < HEADER_SIZE and not data.strip(b"\x00"):
            # A crash between creating the file and writing its header.
            path.unlink()
            return SegmentRecovery(seq, 0, 0, len(data), bad_header)
        quarantine = path.with_suffix(".corrupt")
        os.replace(path, quarantine)
        log.error("journal: segment %s set aside as %s: %s", path.name, quarantine.name, bad_header)
        return SegmentRecovery(seq, 0, 0, len(data), bad_header)
    records = 0
    valid = HEADER_SIZE
    reason = None
    try:
        for end, _payload, _appended in iter_records(data, HEADER_SIZE):
            records += 1
            valid = end
    except Torn as torn:
        reason = torn.reason
    cut = len(data) - valid
    if cut:
        with open(path, "r+b") as f:
            f.truncate(valid)
            f.flush()
            os.fsync(f.fileno())
        log.warning("journal: segment %s: %s at byte %d; cut %d bytes, kept %d records",
                    path.name, reason, valid, cut, records)
    return SegmentRecovery(seq, records, valid, cut, reason)
