"""``type = "file"``: JSON lines on local disk, one file or one per tag.

Each send appends whole lines with one write per file; ``flush`` fdatasyncs the
files written since the last flush, and the delivery loop moves the cursor only
after that. A crash between a write and the cursor commit can repeat the
lines of that last batch (at-least-once), never lose them.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Literal

from agent.component import Outcome, Output, caused_by_records
from agent.config.types import KeyStyle, OutputConfigBase
from agent.hive.records import restyler
from agent.journal.batch import TagBatch
from agent.render import LineRenderer

_PLACEHOLDER = re.compile(r"\{(tag)(?:\[(-?\d+)\])?\}")


class PathTemplate:
    """``var/out/{tag}.jsonl`` or ``var/out/{tag[2]}/events.jsonl``; plain paths work too."""

    def __init__(self, template: str):
        self.template = template
        rest = _PLACEHOLDER.sub("", template)
        if "{" in rest or "}" in rest:
            raise ValueError(f"path {template!r}: only {{tag}} and {{tag[N]}} placeholders are known")
        self._cache: dict[str, Path] = {}

    def for_tag(self, tag: str) -> Path:
        path = self._cache.get(tag)
        if path is None:
            parts = tag.split(".")

            def sub(m: re.Match) -> str:
                if m.group(2) is None:
                    value = tag
                else:
                    i = int(m.group(2))
                    value = parts[i] if -len(parts) <= i < len(parts) else "_"
                value = value.replace("/", "_").replace("\x00", "_")
                # "." or "..": the tag must not name a directory outside the template's own.
                return "_" * max(1, len(value)) if set(value) <= {"."} else value

            path = Path(_PLACEHOLDER.sub(sub, self.template))
            if len(self._cache) > 1024:
                self._cache.clear()
            self._cache[tag] = path
        return path


class FileOutputConfig(OutputConfigBase, frozen=True, kw_only=True):
    type: Literal["file"]
    # "{tag}" and "{tag[N]}" expand per event, e.g. "var/out/{tag}.jsonl".
    path: str
    fsync: bool = True
    key_style: KeyStyle = "raw"

    @property
    def renders_hive_spec(self) -> bool:
        return self.key_style != "raw"  # snake or camel: the spec's fields alone

    def __post_init__(self) -> None:
        super().__post_init__()
        PathTemplate(self.path)

    def destination(self) -> str:
        return f"path {self.path}"


class FileOutput(Output):
    def __init__(self, name: str, path: str, fsync: bool = True, key_style: str = "raw"):
        self.name = name
        self.template = PathTemplate(path)
        self.fsync = fsync
        self.flush_needed = fsync  # its lines are durable only once flush() has synced them
        self.key_style = key_style
        self.restyle = restyler(key_style)
        self.renderer = LineRenderer()
        self._fds: dict[Path, int] = {}
        self._dirty: set[int] = set()

    def _fd(self, path: Path) -> int:
        fd = self._fds.get(path)
        if fd is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            _cut_torn_line(path)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            if len(self._fds) >= 256:
                self._close_all()
            self._fds[path] = fd
        return fd

    async def send(self, batches: list[TagBatch]) -> Outcome:
        by_path: dict[Path, list[bytes]] = {}
        for batch in batches:
            rendered = self.renderer.render(batch, self.restyle)
            by_path.setdefault(self.template.for_tag(batch.tag), []).append(rendered)
        try:
            for path, lines in by_path.items():
                fd = self._fd(path)
                data = memoryview(b"".join(lines))
                while data:
                    data = data[os.write(fd, data) :]
                self._dirty.add(fd)
        except OSError as exc:
            reason = f"{exc.filename or ''}: {exc.strerror}"
            return Outcome.rejected(reason) if caused_by_records(exc) else Outcome.retry(reason)
        return Outcome.ok()

    async def flush(self) -> None:
        if self.fsync and self._dirty:
            dirty, self._dirty = list(self._dirty), set()
            await asyncio.get_running_loop().run_in_executor(None, _sync_all, dirty)
        else:
            self._dirty.clear()

    def _close_all(self) -> None:
        for fd in self._fds.values():
            if fd in self._dirty and self.fsync:
                os.fdatasync(fd)
            os.close(fd)
        self._dirty.clear()
        self._fds.clear()

    async def close(self) -> None:
        await self.flush()
        self._close_all()


def _cut_torn_line(path: Path) -> None:
    """A crash mid-write leaves a line without its newline; its batch is sent again
    (the cursor had not moved), so the partial line goes."""
    try:
        with open(path, "r+b") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            pos = size
            while pos > 0:
                step = min(65536, pos)
                f.seek(pos - step)
                block = f.read(step)
                i = block.rfind(b"\n")
                if i >= 0:
                    pos = pos - step + i + 1
                    break
                pos -= step
            f.truncate(pos)
    except FileNotFoundError:
        pass


def _sync_all(fds: list[int]) -> None:
    for fd in fds:
        os.fdatasync(fd)


def build(cfg: FileOutputConfig, data_dir: Path) -> FileOutput:
    return FileOutput(cfg.name, cfg.path, fsync=cfg.fsync, key_style=cfg.key_style)
