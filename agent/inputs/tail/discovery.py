"""Finding the files to follow: the globs, the tag each path gets, and the directories to watch."""

from __future__ import annotations

import fnmatch
import glob
import logging
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("agent.input.tail")
logging.getLogger("watchfiles").setLevel(logging.WARNING)

_KERNEL_FILES = ("/proc/", "/sys/", "/dev/")


def expand_tag(tag: str, path: str, tag_regex: re.Pattern | None) -> str | None:
    """The tag for ``path``: Fluentd's ``*`` expansion, then ``{group}`` fields from ``tag_regex``.

    None when ``tag_regex`` does not match the path.
    """
    if "*" in tag:
        # fluentd in_tail: '/' becomes '.', runs of dots collapse, no leading dot; the first '*' only.
        tag = tag.replace("*", re.sub(r"\.+", ".", path.replace("/", ".")).lstrip("."), 1)
    if tag_regex is not None:
        m = tag_regex.search(path)
        if m is None:
            return None
        groups = m.groupdict()
        tag = re.sub(r"\{(\w+)\}", lambda g: groups.get(g.group(1)) or "", tag)
    return tag


def watch_root(pattern: str) -> tuple[str, bool]:
    """The directory a glob pattern lives under, and whether it must be watched recursively."""
    parts = Path(pattern).parts
    for i, part in enumerate(parts):
        if glob.has_magic(part):
            return str(Path(*parts[:i])), i < len(parts) - 1
    return str(Path(pattern).parent), False


class FileFinder:
    """The regular files the globs match now, minus the excluded ones and the kernel's."""

    def __init__(self, name: str, paths: list[str], exclude: list[str]):
        self.name = name
        self.paths = paths
        self.exclude = exclude
        self._said: set[str] = set()  # paths already logged as not read
        self._matchers = [re.compile(fnmatch.translate(os.path.abspath(p))).match for p in paths]

    def may_match(self, path: str) -> bool:
        """Could ``path`` be one of the globs' files? (fnmatch's ``*`` also crosses ``/``: a
        superset of what glob matches, so no file that glob finds is ever missed.)"""
        path = os.path.abspath(path)
        return any(matcher(path) for matcher in self._matchers)

    def say_once(self, path: str, message: str, *args: object) -> None:
        """A warning about ``path``, once per path (the globs run again every refresh)."""
        if path not in self._said:
            self._said.add(path)
            log.warning(message, *args)

    def glob(self) -> dict[str, os.stat_result]:
        found: dict[str, os.stat_result] = {}
        excluded: set[str] = set()
        for pattern in self.exclude:
            excluded.update(glob.glob(pattern, recursive=True))
        for pattern in self.paths:
            for path in glob.glob(pattern, recursive=True):
                if path in excluded or path in found:
                    continue
                try:
                    st = os.stat(path)  # through a symlink: in_tail on Kubernetes follows them
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) and self._loggable(path):
                    found[path] = st
        return found

    def _loggable(self, path: str) -> bool:
        """Not a file of the kernel's (/proc, /sys, /dev): those do not grow like a log, and a
        link into them would be read again without end. Said once per path."""
        real = os.path.realpath(path)
        if not real.startswith(_KERNEL_FILES):
            return True
        self.say_once(path, "input %s: %s is %s, a kernel file, not a log; not read", self.name, path, real)
        return False


async def watch(root: str, recursive: bool, changed: Callable[[str, bool], None], woke: Callable[[], None]) -> None:
    """inotify (watchfiles) on ``root``: ``changed(path, modified)`` for each change, then ``woke()``."""
    from watchfiles import Change, awatch

    # The watch thread wakes every `step` ms (and takes the GIL to check for a stop): 20 ms costs
    # about 0.5% of a core. `debounce` bounds how long a change waits while a file is written
    # continuously: it is the copytruncate window, and the latency of a new line.
    async for changes in awatch(root, watch_filter=None, recursive=recursive, debounce=40, step=20):
        for change, path in changes:
            changed(path, change == Change.modified)
        woke()
