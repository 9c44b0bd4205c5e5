"""Segment files on disk: naming, listing, and recovery of damage.

Recovery keeps every record whose header and checksum check out. A torn tail
(a write cut short by a crash: bad bytes with nothing whole after them) is cut
off. Damaged bytes with whole records after them are copied to
``<data_dir>/quarantine/`` and overwritten in place by a filler record, so that
the records after them, and the offsets cursors hold, stay as they were.

The segment's own 16-byte header belongs to no record: a damaged one (a flipped bit, zeroed)
costs no record. Its bytes are set aside and the header this agent writes put back, when
whole records of this version follow it. A segment with no such records (another version's,
or not a journal segment at all) is set aside whole as ``.corrupt``, by the reason its header
gives ("journal version 2 is not supported"): nothing of another version is guessed at.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from agent.journal.record import (
    HEADER_SIZE,
    Buffer,
    Torn,
    batch_count,
    check_segment_header,
    filler_record,
    is_filler,
    iter_records,
    next_record_start,
    segment_header,
    whole_record_at,
)

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
        if name.endswith(SUFFIX) and name[: -len(SUFFIX)].isdigit():
            seqs.append(int(name[: -len(SUFFIX)]))
    seqs.sort()
    return seqs


@dataclass
class SegmentRecovery:
    seq: int
    records: int
    valid_bytes: int
    cut_bytes: int
    reason: str | None
    quarantined_bytes: int = 0
    damaged_regions: int = 0
    events: int = 0  # the entries of its whole batches (fillers hold none)
    header_repaired: bool = False


def recover_segment(path: Path, seq: int, quarantine: Path | None = None) -> SegmentRecovery:
    """Scan a segment: keep every whole record, set damaged bytes aside, cut a torn tail."""
    data: bytes | bytearray = path.read_bytes()
    quarantine = quarantine or path.parent.parent / "quarantine"
    bad_header = check_segment_header(data)
    moved = regions = 0
    if bad_header:
        if len(data) < HEADER_SIZE and not data.strip(b"\x00"):
            # A crash between creating the file and writing its header.
            path.unlink()
            return SegmentRecovery(seq, 0, 0, len(data), bad_header)
        if not _records_follow(data):
            corrupt = path.with_suffix(".corrupt")
            os.replace(path, corrupt)
            log.error("journal: segment %s set aside as %s: %s", path.name, corrupt.name, bad_header)
            return SegmentRecovery(seq, 0, 0, len(data), bad_header)
        _repair_header(path, data, bad_header, quarantine)
        data = bytearray(data)
        data[:HEADER_SIZE] = segment_header()
        moved, regions = HEADER_SIZE, 1
    records = events = 0
    valid = HEADER_SIZE
    reason = None
    while True:
        try:
            for end, payload, _appended in iter_records(data, valid):
                records += 1
                if not is_filler(payload):
                    events += batch_count(payload)
                valid = end
            break
        except Torn as torn:
            reason = torn.reason
        resume = next_record_start(data, valid)
        if resume is None:
            break  # nothing whole after it: a torn tail
        _set_aside(path, data, valid, resume, reason, quarantine)
        if not isinstance(data, bytearray):
            data = bytearray(data)  # one copy for the segment, not one per damaged place
        data[valid:resume] = filler_record(resume - valid)
        moved += resume - valid
        regions += 1
        valid = resume
    cut = len(data) - valid
    if cut:
        with open(path, "r+b") as f:
            f.truncate(valid)
            f.flush()
            os.fsync(f.fileno())
        log.warning(
            "journal: segment %s: %s at byte %d; cut %d bytes, kept %d records", path.name, reason, valid, cut, records
        )
    return SegmentRecovery(seq, records, valid, cut, reason, moved, regions, events, header_repaired=bool(bad_header))


def _records_follow(data: bytes | bytearray) -> bool:
    """Do whole records of this version follow the header (right after it, or further on)?"""
    return whole_record_at(data, HEADER_SIZE) or next_record_start(data, HEADER_SIZE) is not None


def _repair_header(path: Path, data: Buffer, why: str, quarantine: Path) -> None:
    """Set the damaged header's bytes aside, then write the header this agent writes in its place."""
    _keep(quarantine / f"{path.stem}.header.bin", data[:HEADER_SIZE])
    with open(path, "r+b") as f:
        f.write(segment_header())
        f.flush()
        os.fsync(f.fileno())
    log.error(
        "journal: segment %s: its header was damaged (%s): set aside, and the records after it are kept",
        path.name,
        why,
    )


def _keep(kept: Path, data: Buffer) -> None:
    kept.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(kept, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def events_from(path: Path, offset: int) -> int:
    """The entries of the whole batches in a segment from ``offset`` on (a write in progress ends it)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return 0
    events = 0
    try:
        for _end, payload, _appended in iter_records(data, 0, base=offset):
            if not is_filler(payload):
                events += batch_count(payload)
    except Torn:
        pass
    return events


def _set_aside(path: Path, data: Buffer, start: int, stop: int, reason: str | None, quarantine: Path) -> None:
    """Copy damaged bytes to the quarantine, then overwrite them in the segment with a filler."""
    kept = quarantine / f"{path.stem}.{start}-{stop}.bin"
    _keep(kept, data[start:stop])
    with open(path, "r+b") as f:
        f.seek(start)
        f.write(filler_record(stop - start))
        f.flush()
        os.fsync(f.fileno())
    log.error(
        "journal: segment %s: %s at byte %d: %d damaged bytes moved to %s; the records after them are kept",
        path.name,
        reason,
        start,
        stop - start,
        kept,
    )
