"""The one recipe for durable small files (temp file, fsync, rename, fsync dir), and the one
way to read a file someone else named (a regular file, within a size)."""

from __future__ import annotations

import os
import stat
from pathlib import Path


class NotReadable(ValueError):
    """A file named by someone else that is not one to read: why, in a few words."""


def read_regular(path: str | os.PathLike, limit: int | None, size: int = -1) -> bytes:
    """A regular file's bytes: all of them up to ``limit`` (more is refused), or its first
    ``size``. A FIFO would block the read for ever and /dev/zero fill the memory, so anything but
    a regular file is refused, without blocking on the open. OSError when it cannot be opened."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotReadable("not a regular file")
        data = file.read(limit + 1 if limit is not None else size)
    if limit is not None and len(data) > limit:
        raise NotReadable(f"larger than {limit} bytes")
    return data


def fsync_dir(directory: str | os.PathLike) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file, never a mix."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)
