"""Is ``data_dir`` ours alone? Checked before the agent acks anything into it.

The journal under ``data_dir`` is the only copy of every acked purchase until it is delivered. A
directory another user owns, or may write, is one whose segments that user can delete or replace,
and a symlink planted in it sends the agent's writes (dead letters with whole purchases) wherever
the planter chose. So: every directory and file under ``data_dir`` is the agent's user's, no
directory is writable by group or others once the agent has closed its own, and nothing in it is a
symlink. A tree that fails is refused with one line naming the path and why; the agent changes
nothing of a path it does not own.

``data_dir`` itself may be a symlink the operator made (to a volume): its target is checked.
"""

from __future__ import annotations

import itertools
import os
import stat
from collections.abc import Iterator
from pathlib import Path

# A tree this large is not a data_dir the agent made (a few dozen segments, one file per
# component): stop walking rather than stat a planted million files at every start.
MAX_ENTRIES = 100_000


class Untrusted(Exception):
    """One line: the path and why the agent will not use it."""


def prepare(root: str | os.PathLike) -> Path:
    """Create ``data_dir`` (0700) if missing, close what the agent owns, and check the whole tree.

    Returns the resolved directory. Raises :class:`Untrusted` naming the first path that fails."""
    root = Path(root)
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    real = root.resolve()
    _inspect(real, close_own=True)
    return real


def problems(root: str | os.PathLike) -> list[str]:
    """What :func:`prepare` would refuse, without creating or changing anything (``hive-agent check``)."""
    root = Path(root)
    try:
        if root.exists():
            _inspect(root.resolve(), close_own=False)
        else:
            _check_parent(_existing_ancestor(root.absolute()))
    except Untrusted as exc:
        return [str(exc)]
    return []


def _inspect(real: Path, *, close_own: bool) -> None:
    _check_parent(real.parent)
    for path, st in itertools.chain([(real, os.lstat(real))], _walk(real)):
        if close_own:
            st = _close_own(path, st)
        _verify(path, st)


def _walk(root: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """Every entry under ``root`` with its lstat, never following a symlink."""
    seen = 0
    pending = [root]
    while pending:
        directory = pending.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                seen += 1
                if seen > MAX_ENTRIES:
                    raise Untrusted(f"{root}: more than {MAX_ENTRIES} entries; not a data_dir the agent made")
                st = entry.stat(follow_symlinks=False)
                path = Path(entry.path)
                yield path, st
                if stat.S_ISDIR(st.st_mode):
                    pending.append(path)


def _close_own(path: Path, st: os.stat_result) -> os.stat_result:
    """A directory the agent owns, made by an earlier version or by hand: private (0700) now."""
    if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and st.st_mode & 0o077:
        os.chmod(path, 0o700, follow_symlinks=False)
        return os.lstat(path)
    return st


def _verify(path: Path, st: os.stat_result) -> None:
    me = os.geteuid()
    if stat.S_ISLNK(st.st_mode):
        raise Untrusted(f"{path} is a symlink; nothing inside data_dir may point elsewhere")
    if st.st_uid != me:
        raise Untrusted(f"{path} is owned by uid {st.st_uid}, not the agent's user (uid {me})")
    if stat.S_ISDIR(st.st_mode) and st.st_mode & 0o022:
        raise Untrusted(f"{path} is writable by {_who(st.st_mode)}")
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode) or stat.S_ISSOCK(st.st_mode)):
        raise Untrusted(f"{path} is not a directory, a regular file or a socket")


def _check_parent(parent: Path) -> None:
    """Whoever may write the parent may rename data_dir away and put another in its place, unless
    the sticky bit keeps them to their own names (as in /tmp). A group-writable parent is left
    alone: under user private groups (umask 002) that group is the user's own."""
    st = os.stat(parent)
    if st.st_mode & 0o002 and not st.st_mode & stat.S_ISVTX:
        raise Untrusted(f"{parent} (data_dir's parent) is writable by others and not sticky")


def _existing_ancestor(path: Path) -> Path:
    for parent in path.parents:
        if parent.exists():
            return parent
    return Path("/")


def _who(mode: int) -> str:
    return "group and others" if mode & 0o020 and mode & 0o002 else ("group" if mode & 0o020 else "others")
