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
            for line in path.read_bytes().splitlines():
                if line.strip():
                    item = orjson.loads(line)
                    by_tag.setdefault(item["tag"], []).append(_entries_of(item))
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


def _entries_of(item: dict) -> tuple[bytes, int]:
    """A dead letter's events as journal entries: re-packed from JSON, or its kept msgpack bytes."""
    if "entries_msgpack_b64" in item:
        return base64.b64decode(item["entries_msgpack_b64"]), item["count"]
    if "record" not in item:  # only a description of it could be kept
        log.error("replay: a dead letter of %s holds no record (%s); not replayed", item.get("tag"), item.get("note"))
        return b"", 0
    return msgpack.packb([msgpack.ExtType(EVENT_TIME_EXT, event_time_payload(item["time_ns"])), item["record"]]), 1
