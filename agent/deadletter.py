"""The dead-letter store: what could not be delivered, with why, never dropped.

One JSON-lines file per output (or filter) under ``<data_dir>/deadletter/``;
each line holds the source, the reason, the tag, the event time and the
record, so a person can read it and a replay can re-queue it.

Replay (``hive-agent deadletter replay``) moves the chosen lines out of the
store into a spool file under ``<data_dir>/replay/``; the running agent (or
the next one to start) journals them again, for that one output only (or,
for a filter's dead letters, through the filters again), and deletes the
spool file once the journal has them. Every change to a dead-letter file
holds that file's lock, so the delivery process appending and the CLI taking
lines out never lose each other's lines, and writers of different files never
wait for each other.
"""

from __future__ import annotations

import base64
import collections
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson

from agent.fsutil import atomic_write
from agent.journal.batch import TagBatch, json_default
from agent.journal.record import batch_count, batch_entries
from agent.paths import file_name
from agent.render import rfc3339_ns
from agent.secrets import scrub

log = logging.getLogger("agent.deadletter")

SPOOL_SUFFIX = ".jsonl"


class DeadLetterStore:
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.spool = self.directory.parent / "replay"

    def path(self, source: str) -> Path:
        return self.directory / f"{file_name(source)}.jsonl"

    @contextmanager
    def _locked(self, source: str) -> Iterator[None]:
        """One lock per source's file: the delivery processes and the main process, each writing
        its own sources' dead letters, never wait for each other; only a replay of that source does."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.directory / f".{file_name(source)}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def write(self, output_name: str, reason: str, batches: list[TagBatch]) -> int:
        """Dead-letter whole batches that an output could not deliver, all for one reason.

        Never fails because of what the records hold: a batch whose records cannot be decoded
        or written as JSON (nesting too deep, keys JSON has no form for) is kept as its journal
        bytes, base64 (``entries_msgpack_b64``), which a replay journals again as they were."""
        at = rfc3339_ns(time.time_ns())
        lines: list[bytes] = []
        count = 0
        for b in batches:
            try:
                items = [(b.tag, t, r, reason) for t, r in b.entries]
                lines.extend(self._lines(output_name, items, at))
                count += len(items)
            except Exception as exc:  # the content's fault: keep the bytes instead
                if b.payload is None:
                    raise
                n = batch_count(b.payload)
                entries = base64.b64encode(batch_entries(b.payload)).decode()
                note = f"kept as msgpack: {type(exc).__name__}: {exc}"[:300]
                lines.append(_line(output_name, reason, at, b.tag, count=n, entries_msgpack_b64=entries, note=note))
                count += n
        self._append(output_name, lines)
        return count

    def _lines(self, source: str, items: list[tuple[str, int, dict, str]], at: str) -> list[bytes]:
        return [
            _line(source, reason, at, tag, time=rfc3339_ns(time_ns), time_ns=time_ns, record=record)
            for tag, time_ns, record, reason in items
        ]

    def write_records(self, source: str, items: list[tuple[str, int, dict, str]]) -> int:
        """Dead-letter records one by one: (tag, time_ns, record, reason)."""
        at = rfc3339_ns(time.time_ns())
        lines = []
        for item in items:
            try:
                lines.extend(self._lines(source, [item], at))
            except Exception as exc:  # the content's fault: keep what can be kept
                tag, time_ns, record, reason = item
                note = f"not JSON: {type(exc).__name__}: {exc}"[:300]
                lines.append(
                    _line(
                        source,
                        reason,
                        at,
                        tag,
                        time=rfc3339_ns(time_ns),
                        time_ns=time_ns,
                        record_repr=_bounded_repr(record),
                        note=note,
                    )
                )
        self._append(source, lines)
        return len(lines)

    def _append(self, source: str, lines: list[bytes]) -> None:
        lines = [scrub_line(line) for line in lines]  # a destination that echoed our credentials
        with self._locked(source):
            fd = os.open(self.path(source), os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
            try:
                start = os.fstat(fd).st_size
                data = b"".join(lines)
                if start and os.pread(fd, 1, start - 1) != b"\n":
                    data = b"\n" + data  # a line torn by a crash stays a line of its own, which readers skip
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                except OSError:
                    # A full disk mid-write: back to the last whole line, so that the sender's
                    # resend is never glued to half of this one.
                    try:
                        os.ftruncate(fd, start)
                    except OSError:
                        pass
                    raise
            finally:
                os.close(fd)

    # -- reading, for people and for replay --------------------------------------

    def sources(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.jsonl"))

    def read(self, source: str) -> list[dict]:
        """The dead letters of ``source``; a line that is not one (torn by a crash) is skipped."""
        return self._read(source)[0]

    def _read(self, source: str) -> tuple[list[dict], list[bytes]]:
        """(the dead letters, the lines that are none), each logged once by file and line number."""
        try:
            data = self.path(source).read_bytes()
        except FileNotFoundError:
            return [], []
        letters, unreadable, numbers = [], [], []
        for number, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            try:
                letter = orjson.loads(line)
            except orjson.JSONDecodeError:
                letter = None
            if isinstance(letter, dict) and "reason" in letter and "tag" in letter:
                letters.append(letter)
            else:
                unreadable.append(line)
                numbers.append(number)
        if numbers:
            log.warning(
                "dead letters %s: %d lines are not dead letters and were skipped (line %s)",
                self.path(source),
                len(numbers),
                ", ".join(map(str, numbers[:10])) + (" …" if len(numbers) > 10 else ""),
            )
        return letters, unreadable

    def summary(self, samples: int = 3) -> dict[str, dict]:
        out = {}
        for source in self.sources():
            lines, unreadable = self._read(source)
            if not lines and not unreadable:
                continue
            reasons = collections.Counter(str(line["reason"]) for line in lines)
            out[source] = {
                "count": len(lines),
                "reasons": reasons.most_common(),
                "samples": lines[:samples],
                "unreadable": len(unreadable),
            }
        return out

    def take_for_replay(self, source: str, reason: str | None = None) -> tuple[int, Path | None]:
        """Move the lines of ``source`` (whose reason contains ``reason``) into a spool file."""
        with self._locked(source):
            lines, unreadable = self._read(source)
            chosen = [l for l in lines if reason is None or reason in str(l["reason"])]
            if not chosen:
                return 0, None
            rest = [l for l in lines if not (reason is None or reason in str(l["reason"]))]
            self.spool.mkdir(mode=0o700, parents=True, exist_ok=True)
            spool = self.spool / f"{file_name(source)}.{time.time_ns()}{SPOOL_SUFFIX}"
            atomic_write(spool, b"".join(orjson.dumps(l) + b"\n" for l in chosen))
            # The lines that are no dead letters stay where they were, for a person to look at.
            kept = [orjson.dumps(l) for l in rest] + unreadable
            atomic_write(self.path(source), b"".join(line + b"\n" for line in kept))
        return len(chosen), spool

    def spooled(self) -> list[Path]:
        if not self.spool.is_dir():
            return []
        return sorted(self.spool.glob(f"*{SPOOL_SUFFIX}"))


def _line(source: str, reason: str, at: str, tag: str, **what: object) -> bytes:
    """One dead letter: where from, why, when, the tag, and what could be kept of the events."""
    head = {"output": source, "reason": reason, "at": at, "tag": tag}
    return orjson.dumps({**head, **what}, default=json_default, option=orjson.OPT_NON_STR_KEYS) + b"\n"


def scrub_line(line: bytes) -> bytes:
    text = line.decode("utf-8", "surrogateescape")
    cleaned = scrub(text)
    return line if cleaned is text else cleaned.encode("utf-8", "surrogateescape")


def _bounded_repr(value: object, limit: int = 65536) -> str:
    try:
        return repr(value)[:limit]
    except RecursionError:
        return "(nested too deep to show)"


def spool_source(path: Path) -> str:
    """The output or filter a spool file was taken from (its file-name form, see safe_name)."""
    return path.name[: -len(SPOOL_SUFFIX)].rsplit(".", 1)[0]
