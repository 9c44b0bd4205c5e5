"""Dead letters that ``hive-agent deadletter replay`` spooled, journaled again by the running agent.

An output's dead letters go back for that output only (a targeted journal
batch); a filter's go through the filters again, for every matching output.
The spool file is deleted once the journal holds its records.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from pathlib import Path

import msgpack
import orjson

from agent.deadletter import DeadLetterStore, spool_source
from agent.ingest import Ingest
from agent.paths import file_name
from agent.protocol.event_time import EVENT_TIME_EXT, event_time_payload

log = logging.getLogger("agent")


class ReplayIngest:
    def __init__(self, store: DeadLetterStore, ingest: Ingest, *, outputs: set[str], filters_names: set[str]):
        self.store = store
        self.step = ingest
        self.outputs = outputs
        self.filters_names = filters_names
        self._unknown: set[Path] = set()

    async def ingest(self) -> None:
        """Journal the dead letters that ``hive-agent deadletter replay`` spooled."""
        by_file_name = {file_name(n): n for n in self.outputs | self.filters_names}
        outputs, filters = self.outputs, self.filters_names
        for path in self.store.spooled():
            source = by_file_name.get(spool_source(path), spool_source(path))
            if source not in outputs and source not in filters:
                if path not in self._unknown:
                    self._unknown.add(path)
                    log.error("replay: %s names no output or filter of this config; left in place", path.name)
                continue
            by_tag: dict[str, list[tuple[bytes, int]]] = {}
            again: list[tuple[str, int, dict, str]] = []  # what cannot go back: dead-lettered again
            for number, line in enumerate(path.read_bytes().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    item = orjson.loads(line)
                    kept = _entries_of(item)
                    by_tag.setdefault(_tag_of(item), []).append(kept)
                except Exception as exc:  # one line's fault: never the spool's, never the start's
                    again.append(_unreplayable(path, number, line, exc))
            if again:
                await asyncio.to_thread(self.store.write_records, source, again)
                log.error(
                    "replay: %d dead letters of %s in %s cannot be journaled again; dead-lettered again (first: %s)",
                    len(again),
                    source,
                    path.name,
                    again[0][3],
                )
            waits = []
            total = 0
            for tag, entries in by_tag.items():
                count = sum(n for _, n in entries)
                fut = self.step.submit(
                    tag,
                    b"".join(e for e, _ in entries),
                    count,
                    filtered=source in filters,
                    target=source if source in outputs else None,
                )
                if fut is not None:
                    waits.append(fut)
                    total += count
            await asyncio.gather(*waits)
            path.unlink()
            log.info("replay: %d dead letters of %s are back in the journal", total, source)


def _tag_of(item: dict) -> str:
    tag = item["tag"]
    if not isinstance(tag, str):
        raise ValueError(f"its tag is {type(tag).__name__}, not a string")
    return tag


def _unreplayable(path: Path, number: int, line: bytes, exc: Exception) -> tuple[str, int, dict, str]:
    """A spool line that cannot be journaled, as a dead letter of its own: why, and what it held."""
    reason = f"replay: line {number} of {path.name} cannot be journaled again: {type(exc).__name__}: {exc}"[:500]
    try:
        item = orjson.loads(line)
    except orjson.JSONDecodeError:
        item = None
    if isinstance(item, dict) and isinstance(item.get("tag"), str):
        time_ns, record = item.get("time_ns"), item.get("record")
        return (
            item["tag"],
            time_ns if isinstance(time_ns, int) else 0,
            record if isinstance(record, dict) else item,
            reason,
        )
    return "replay.unreadable", 0, {"line": line[:65536].decode("utf-8", "replace")}, reason


def _entries_of(item: dict) -> tuple[bytes, int]:
    """A dead letter's events as journal entries: re-packed from JSON, or its kept msgpack bytes."""
    if "entries_msgpack_b64" in item:
        return base64.b64decode(item["entries_msgpack_b64"]), item["count"]
    if "record" not in item:  # only a description of it could be kept
        log.error("replay: a dead letter of %s holds no record (%s); not replayed", item.get("tag"), item.get("note"))
        return b"", 0
    return msgpack.packb([msgpack.ExtType(EVENT_TIME_EXT, event_time_payload(item["time_ns"])), item["record"]]), 1
