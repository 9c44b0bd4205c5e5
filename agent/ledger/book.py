"""The main process's side of the ledger: where counting starts, the segments the ``in`` count
still has to read, the duplicates the hive filters dropped, the sweep of old days, and the
figures /metrics shows. The counting itself is the delivery processes' (agent/ledger/store.py).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from agent.component import Filter
from agent.config.document import AgentConfig
from agent.journal.cursor import Position
from agent.ledger.plan import LedgerPlan
from agent.ledger.store import IN, Ledger, LedgerWriter, connect, read_mark
from agent.paths import DataPaths

log = logging.getLogger("agent.ledger")

FLUSH_INTERVAL = 1.0  # seconds between writes of the duplicates counted
SWEEP_INTERVAL = 3600.0


class LedgerBook:
    def __init__(self, cfg: AgentConfig, paths: DataPaths):
        self.cfg = cfg
        self.plan = LedgerPlan(cfg)
        self.writer = LedgerWriter(Ledger(paths.ledger, self.plan, paths.journal))
        self.paths = paths
        # pin() runs on the event loop (or the journal's collection) while the writer's thread may
        # be in a transaction on its own connection: it reads on one of its own.
        self._reads: sqlite3.Connection | None = None
        self._unwritten: collections.Counter[tuple[str, str]] = collections.Counter()  # duplicates

    def begin(self, journal_end: Position) -> None:
        """Before the delivery processes start: counting starts at the journal's end for a new ledger."""
        self.writer.ledger.begin(journal_end)
        self.sweep()

    def pin(self) -> Position | None:
        """The journal position the ``in`` count has read through: segments after it stay."""
        try:
            if self._reads is None:
                self._reads = connect(self.paths.ledger, readonly=True)
            found = read_mark(self._reads, IN)
        except sqlite3.Error as exc:
            log.warning("ledger: cannot read its in mark: %s", exc)
            return Position(0, 0)  # keep every segment until it can be read again
        return None if found is None else found[0]

    def sweep(self) -> None:
        days = self.cfg.agent.ledger_retention / 86400
        oldest = (datetime.now(UTC) + self.plan_offset() - timedelta(days=days)).date().isoformat()
        try:
            swept = self.writer.ledger.sweep(oldest)
        except sqlite3.Error as exc:
            log.warning("ledger: cannot sweep days before %s: %s", oldest, exc)
            return
        if swept:
            log.info("ledger: swept %d rows of days before %s (ledger_retention)", swept, oldest)

    def plan_offset(self) -> timedelta:
        tz = self.plan.readers[0][1].tz if self.plan.readers else UTC
        return tz.utcoffset(None) or timedelta(0)

    async def run(self, filters: Callable[[], Iterable[Filter]]) -> None:
        """Every second, the duplicates the hive filters dropped; every hour, the sweep."""
        swept_at = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            await self.flush(filters())
            if asyncio.get_running_loop().time() - swept_at > SWEEP_INTERVAL:
                swept_at = asyncio.get_running_loop().time()
                await self.writer.call(self.sweep)

    async def flush(self, filters: Iterable[Filter]) -> None:
        by_day = self._unwritten
        for f in filters:
            take = getattr(f, "take_duplicates", None)
            if take is None:
                continue
            for (tag, when, tz), n in take().items():
                reader = self.plan.reader_for(tag)
                if reader is not None:
                    facts = reader.facts(tag, time.time_ns(), {"purchase_time": when, "timezone": tz})
                    by_day[(facts.day, facts.game)] += n
        if by_day:
            try:
                await self.writer.call(self.writer.ledger.add_duplicates, dict(by_day))
            except sqlite3.Error as exc:  # a full disk: kept for the next flush
                log.warning("ledger: cannot count %d duplicates: %s", sum(by_day.values()), exc)
            else:
                by_day.clear()

    def close(self) -> None:
        if self._reads is not None:
            self._reads.close()
            self._reads = None
        self.writer.close()
