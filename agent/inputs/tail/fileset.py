"""The files one tail input follows: found by its globs, opened, known by (device, inode).

What the globs match (discovery.py, in a thread), turned into the followed set: new files
opened at the right offset (a saved position, an imported one, the end of a file found at
the first start), renamed ones followed or let go after ``rotate_wait``, deleted ones read to
their end. Which files have something to read is kept in ``dirty``, in order. Reading them
is the input loop's (input.py); where each stands durably is the checkpointer's.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import time
from typing import TYPE_CHECKING

from agent.inputs.tail.config import TailInputConfig
from agent.inputs.tail.discovery import FileFinder, expand_tag
from agent.inputs.tail.followed import FollowedFile, after_last_newline, line_start, same_file
from agent.inputs.tail.imported import ImportedPosition
from agent.inputs.tail.position import FINGERPRINT_BYTES, FileKey, FilePosition, fingerprint

if TYPE_CHECKING:
    from agent.inputs.tail.input import TailStats

log = logging.getLogger("agent.input.tail")


class FileSet:
    def __init__(self, name: str, cfg: TailInputConfig, stats: TailStats):
        self.name = name
        self.cfg = cfg
        self.stats = stats
        self.tag_regex = re.compile(cfg.tag_regex) if cfg.tag_regex else None
        self.files: dict[FileKey, FollowedFile] = {}
        self.released: dict[FileKey, FilePosition] = {}  # rotated names in the globs, done with
        self.saved: dict[FileKey, FilePosition] = {}  # loaded at start, for files not found yet
        self.imported: dict[int, ImportedPosition] = {}  # by inode, from another agent, first start only
        self.by_path: dict[str, FileKey] = {}
        self.dirty: dict[FileKey, None] = {}  # files to read, in order (a set that keeps order)
        self.finder = FileFinder(name, cfg.path, cfg.exclude_path)
        self.scan_requested = False
        self.scanned_at = 0.0  # monotonic: when the globs last matched
        self.changed = False  # a position, or the set of files, changed since the last checkpoint

    def __len__(self) -> int:
        return len(self.files)

    def positions(self) -> dict[FileKey, FilePosition]:
        """Where every file stands durably, the released ones too: what the position file holds."""
        positions = {key: followed.pos for key, followed in self.files.items()}
        positions.update(self.released)
        return positions

    def scan(self, matches: dict[str, os.stat_result], initial: bool = False) -> None:
        """Pick up new files, notice renamed and vanished ones, from what the globs matched."""
        by_key: dict[FileKey, str] = {}
        for path, st in matches.items():
            by_key.setdefault((st.st_dev, st.st_ino), path)
        now = time.monotonic()
        for key, followed in self.files.items():
            found = by_key.get(key)
            if found == followed.path:
                continue
            if found is None and followed.deleted():
                followed.gone = True
            if found is not None and self.cfg.follow_inodes:
                self.by_path.pop(followed.path, None)
                followed.path = found  # the same file under its rotated name; its tag stays
                self.by_path[found] = key
                self.changed = True
                continue
            if followed.away_since is None:
                followed.away_since = now
                self.stats.rotations += 1
                if self.by_path.get(followed.path) == key:
                    del self.by_path[followed.path]
                log.info(
                    "input %s: file %s was rotated away; reading it to its end within rotate_wait (%gs)",
                    self.name,
                    followed.path,
                    self.cfg.rotate_wait,
                )
            self.dirty[key] = None
        for key, path in by_key.items():
            if key not in self.files and key not in self.released:
                self._open(key, path, matches[path], initial)
        for key in [k for k in self.released if k not in by_key]:
            del self.released[key]
            self.changed = True

    def _open(self, key: FileKey, path: str, st: os.stat_result, initial: bool) -> None:
        tag = expand_tag(self.cfg.tag, path, self.tag_regex)
        if tag is None:
            self.finder.say_once(
                path, "input %s: file %s: tag_regex does not match its path; not read", self.name, path
            )
            return
        try:
            # O_NONBLOCK: a FIFO put in the glob's place between the stat and the open must not hang us.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            log.warning("input %s: file %s: cannot open: %s", self.name, path, exc.strerror)
            return
        fst = os.fstat(fd)
        if (fst.st_dev, fst.st_ino) != key or not stat.S_ISREG(fst.st_mode):  # replaced since the glob
            os.close(fd)
            self.scan_requested = True
            return
        saved = self.saved.get(key)
        if saved is not None and same_file(fd, saved, fst.st_size):
            if saved.released:
                os.close(fd)
                self.released[key] = saved
                return
            # The same file; if it was truncated while the agent was away, all of it is new.
            offset = saved.offset if line_start(fd, saved.offset, fst.st_size) else 0
            fp_len, fp = saved.fp_len, saved.fp
        elif key[1] in self.imported:
            offset = self._imported_offset(self.imported[key[1]], path, fd, fst.st_size)
            fp_len, fp = 0, 0
        else:
            offset = (
                0
                if self.cfg.read_from_head or not initial
                else after_last_newline(fd, fst.st_size, self.cfg.max_line_size)
            )
            fp_len, fp = 0, 0
        if offset and not fp_len:
            head = os.pread(fd, min(FINGERPRINT_BYTES, offset), 0)
            fp_len, fp = len(head), fingerprint(head)
        followed = FollowedFile(
            key, path, tag, fd, offset, self.cfg.max_line_size, FilePosition(path, offset, fp_len, fp)
        )
        self.files[key] = followed
        self.by_path[path] = key
        self.dirty[key] = None
        self.changed = True
        self.stats.files_opened += 1
        log.info("input %s: following %s from offset %d as tag %s", self.name, path, offset, tag)

    def _imported_offset(self, imported: ImportedPosition, path: str, fd: int, size: int) -> int:
        """Where another agent had read this file to, if that can be where a line starts; else 0
        (read again, duplicates at worst: never a gap)."""
        if imported.offset <= size and line_start(fd, imported.offset, size):
            log.info(
                "input %s: file %s starts at offset %d, from %s (as %s)",
                self.name,
                path,
                imported.offset,
                imported.source,
                imported.path,
            )
            return imported.offset
        log.warning(
            "input %s: file %s: offset %d from %s is past its end or not where a line starts; reading it from 0",
            self.name,
            path,
            imported.offset,
            imported.source,
        )
        return 0

    def stat_all(self) -> None:
        """The safety net under inotify: what changed size, moved or was deleted."""
        for key, followed in self.files.items():
            try:
                st = os.stat(followed.path)
            except OSError:
                st = None
            if st is not None and (st.st_dev, st.st_ino) == key and followed.away_since is None:
                if st.st_size != followed.read_pos:
                    self.dirty[key] = None
                continue
            self.dirty[key] = None
            if followed.deleted():
                followed.gone = True
            elif followed.away_since is None:
                self.scan_requested = True

    def changed_on_disk(self, path: str, modified: bool) -> None:
        """An inotify event: a followed file to read, or a name that may change the followed set.
        Any other (a write to an unfollowed file in a watched directory) asks for nothing."""
        key = self.by_path.get(path)
        if key is not None and modified:
            self.dirty[key] = None
        elif key is not None or self.finder.may_match(path) or (not modified and os.path.isdir(path)):
            self.scan_requested = True

    def release(self, followed: FollowedFile, rotated: bool) -> None:
        """``followed`` is read to its end and closed: out of the set (a rotated name the globs
        still match is remembered as done with, unless follow_inodes follows it)."""
        if followed.close():
            self.stats.files_closed += 1
        del self.files[followed.key]
        if self.by_path.get(followed.path) == followed.key:
            del self.by_path[followed.path]
        if rotated and not self.cfg.follow_inodes:
            self.released[followed.key] = FilePosition(followed.path, followed.read_pos, released=True)
        self.changed = True

    def close_all(self) -> None:
        for followed in self.files.values():
            if followed.close():
                self.stats.files_closed += 1
