"""What the ledger counts, from the config: which tags are purchases (a hive filter's match), how
each is read (the filter's refund rule, the ledger's timezone), and which outputs each reaches."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent.filters.hive import HiveFilterConfig
from agent.journal.batch import TagBatch
from agent.journal.cursor import Position
from agent.journal.reader import JournalRecord
from agent.journal.record import batch_target, entries_array, peek_tag
from agent.ledger.tally import Key, Reader, Tally, parse_offset, sums_of
from agent.routing import compile_pattern

if TYPE_CHECKING:
    from agent.config.document import AgentConfig

SUMS_CACHED = 4096  # journal records: the first process to read one sums it for its outputs and the in count


class LedgerPlan:
    def __init__(self, cfg: AgentConfig):
        tz = parse_offset(cfg.agent.ledger_timezone)
        self.readers: list[tuple[Callable[[str], bool], Reader]] = [
            (compile_pattern(f.match), Reader(tz, f.refund_field, tuple(f.refund_values)))
            for f in cfg.filters
            if isinstance(f, HiveFilterConfig)
        ]
        self.outputs = [(o.name, compile_pattern(o.routing_match)) for o in cfg.outputs]
        self._for_tag: dict[str, tuple[Reader | None, list[str]]] = {}
        self._sums: collections.OrderedDict[Position, dict[Key, list[Any]]] = collections.OrderedDict()
        self._lock = threading.Lock()  # the delivery loops and the ledger's thread both sum

    def shrink(self) -> None:
        """Once a burst is over (agent/memory.py): the sums of records every output has passed, and
        the readers' caches, are only what keeps the burst's memory from going back."""
        with self._lock:
            self._sums.clear()
        self._for_tag.clear()
        for _, reader in self.readers:
            reader.shrink()

    def reader_for(self, tag: str) -> Reader | None:
        return self._routes(tag)[0]

    def _routes(self, tag: str) -> tuple[Reader | None, list[str]]:
        found = self._for_tag.get(tag)
        if found is None:
            if len(self._for_tag) > 4096:  # tags are the senders' to choose: bound the cache
                self._for_tag.clear()
            reader = next((r for matches, r in self.readers if matches(tag)), None)
            outputs = [name for name, matches in self.outputs if matches(tag)] if reader else []
            found = self._for_tag[tag] = (reader, outputs)
        return found

    def sums(self, record: JournalRecord, reader: Reader, batch: TagBatch) -> dict[Key, list[Any]]:
        """The record's purchases by (day, game, currency): [n, revenue] (cached by position)."""
        with self._lock:
            found: dict[Key, list[Any]] | None = self._sums.get(record.next)
        if found is None:
            payload = batch.payload
            if payload is not None:
                found = reader.sums(batch.tag, entries_array(payload))
            if found is None:
                found = sums_of(reader, batch.tag, batch.entries)
            with self._lock:
                self._sums[record.next] = found
                if len(self._sums) > SUMS_CACHED:
                    self._sums.popitem(last=False)
        return found

    def count_in(self, record: JournalRecord, tally: Tally) -> int:
        """Add one journal record's purchases to ``tally`` as ``in`` for every output they reach
        (the output's name in the reason slot); how many purchases. A replay (a record journaled
        for one output) is counted by that output's settle instead."""
        if batch_target(record.payload) is not None:
            return 0
        tag = peek_tag(record.payload)
        reader, outputs = self._routes(tag)
        if reader is None or not outputs:
            return 0
        sums = self.sums(record, reader, TagBatch(tag, payload=record.payload))
        for name in outputs:
            tally.add_sums("in", name, sums)
        return sum(cell[0] for cell in sums.values())
