"""One followed file: its descriptor, where it is read up to, and what it was durably read to.

The file is known by (device, inode). These are the reads that tell what
happened to it in place: whether it was rewritten (copytruncate), the
fingerprint of its first bytes, where a position taken from an earlier run
may resume, and where a file found at start begins without read_from_head.
"""

from __future__ import annotations

import errno
import os

from agent.inputs.tail.position import FINGERPRINT_BYTES, FileKey, FilePosition, fingerprint
from agent.protocol.jsonlines import LineSplitter


class FollowedFile:
    """One file being read."""

    __slots__ = ("key", "path", "tag", "fd", "splitter", "read_pos", "pos", "away_since", "gone", "generation")

    def __init__(
        self, key: FileKey, path: str, tag: str, fd: int | None, offset: int, max_line_size: int, pos: FilePosition
    ):
        self.key = key
        self.path = path
        self.tag = tag
        self.fd = fd
        self.splitter = LineSplitter(offset, max_line_size)
        self.read_pos = offset  # the next byte to read
        self.pos = pos  # the durable position: what the position file may say
        self.away_since: float | None = None  # no longer at a watched name since then (monotonic)
        self.gone = False  # deleted: read to the end, then close at once
        self.generation = 0  # counts truncations: a batch read before one must not move the position after it

    def descriptor(self) -> int:
        """The open file's descriptor (a closed file is never read)."""
        if self.fd is None:
            raise OSError(errno.EBADF, f"{self.path} is closed")
        return self.fd

    def rewritten(self) -> bool:
        """Other bytes than those read: the line before the read position no longer ends there,
        or the first bytes differ from the fingerprint."""
        fd = self.descriptor()
        consumed = self.splitter.consumed
        if consumed and os.pread(fd, 1, consumed - 1) != b"\n":
            return True
        fp_len = self.pos.fp_len
        return bool(fp_len) and fingerprint(os.pread(fd, fp_len, 0)) != self.pos.fp

    def next_position(self) -> FilePosition:
        """The position after the lines split so far, with the fingerprint of the first bytes."""
        consumed = self.splitter.consumed
        fp_len, fp = self.pos.fp_len, self.pos.fp
        if fp_len < FINGERPRINT_BYTES and consumed > fp_len:
            head = os.pread(self.descriptor(), min(FINGERPRINT_BYTES, consumed), 0)
            fp_len, fp = len(head), fingerprint(head)
        return FilePosition(self.path, consumed, fp_len, fp)

    def deleted(self) -> bool:
        return self.fd is not None and os.fstat(self.fd).st_nlink == 0

    def close(self) -> bool:
        """Close it; True if it was open."""
        if self.fd is None:
            return False
        os.close(self.fd)
        self.fd = None
        return True


def same_file(fd: int, saved: FilePosition, size: int) -> bool:
    """Is the file at a saved (device, inode) the one saved there, not a later one that got the inode?"""
    if not saved.fp_len:
        return True
    return size >= saved.fp_len and fingerprint(os.pread(fd, saved.fp_len, 0)) == saved.fp


def line_start(fd: int, offset: int, size: int) -> bool:
    return offset == 0 or (offset <= size and os.pread(fd, 1, offset - 1) == b"\n")


def after_last_newline(fd: int, size: int, max_line_size: int) -> int:
    """Where to start in a file found at start without read_from_head: after its last whole line."""
    if size == 0:
        return 0
    back = min(size, max_line_size + 1)
    tail = os.pread(fd, back, size - back)
    nl = tail.rfind(b"\n")
    if nl < 0:
        return 0 if back == size else size
    return size - back + nl + 1
