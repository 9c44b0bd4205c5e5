"""One output's side of the ledger: what its delivery loop counts while it sends, and the settle.

The loop (agent/delivery/runner.py) counts a journal record's purchases as
delivered when it hands them to the output, and moves one to ``refused`` or
``skipped`` when the send says so. Records at or before the output's mark were
counted before a kill and are sent again uncounted. The settle, just before the
cursor is saved, adds what was counted since the last one (agent/ledger/store.py).
"""

from __future__ import annotations

import time
from typing import Any

from agent.component import Output
from agent.hive.records import refund_state
from agent.journal.batch import TagBatch, record_of
from agent.journal.cursor import Position
from agent.journal.reader import JournalRecord
from agent.ledger.plan import LedgerPlan
from agent.ledger.store import LedgerWriter
from agent.ledger.tally import Reader, Tally


class OutputLedger:
    def __init__(self, name: str, writer: LedgerWriter, plan: LedgerPlan, output: Output):
        self.name = name
        self.writer = writer
        self.plan = plan
        self.output = output
        self.unsettled = Tally()  # counted since the last settle
        self.mark, self.finished_ns = writer.ledger.output_mark(name)
        output.ledger_settled(self.finished_ns)

    def counts(self, record: JournalRecord) -> bool:
        """Is this record still to be counted (not counted before a kill)?"""
        return record.next > self.mark

    def sent(self, record: JournalRecord, batch: TagBatch, replayed: bool, tally: Tally) -> None:
        """Count the purchases of ``batch`` delivered, until the send says otherwise. A replayed dead
        letter is looked up by the settle: it leaves ``refused`` (or, unknown there, comes in)."""
        reader = self.plan.reader_for(batch.tag)
        if reader is None:
            return  # not a purchase
        if not replayed:
            tally.add_sums("delivered", "", self.plan.sums(record, reader, batch))
            return
        for time_ns, rec in batch.entries:
            facts = reader.facts(batch.tag, time_ns, rec)
            tally.add("delivered", "", facts)
            key = _key(reader, rec)
            if key is None:
                tally.add("in", "", facts)
            else:
                tally.replayed.append((*key, facts))

    def counted_as(self, tally: Tally | None, state: str, tag: str, time_ns: Any, record: Any, reason: str) -> None:
        """One purchase of the batches being sent was refused or skipped, not delivered."""
        reader = self.plan.reader_for(tag)
        if tally is None or reader is None:
            return
        facts = reader.facts(tag, time_ns, record)
        tally.move(facts, state, reason)
        key = _key(reader, record_of(record)) if state == "refused" else None
        if key is not None:
            tally.refusals.append((*key, reason, facts))

    def done(self, tally: Tally) -> None:
        """The batch of ``tally`` is delivered (or dead-lettered)."""
        if tally:
            self.unsettled.merge(tally)
        self.finished_ns = time.time_ns()

    async def settle(self, position: Position) -> None:
        """Add what was counted through ``position`` (called before the cursor moves there)."""
        if position <= self.mark:
            return
        await self.writer.call(self.writer.ledger.settle, self.name, self.unsettled, position, self.finished_ns)
        self.unsettled, self.mark = Tally(), position
        self.output.ledger_settled(self.finished_ns)


def _key(reader: Reader, record: Any) -> tuple[str, str] | None:
    """(app_id, transaction_id, with ``:refund`` for a refund): how a replayed dead letter is found
    among the refusals."""
    if not isinstance(record, dict):
        return None
    app, txn = record.get("app_id"), record.get("transaction_id")
    if not (isinstance(app, str) and isinstance(txn, str) and txn):
        return None
    return app, txn + (":refund" if refund_state(record, reader.refund_field, reader.refund_values) else "")
