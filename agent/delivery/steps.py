"""What one read of the journal is for an output's send: its batches, each with where its journal
record ends and what the ledger counts of it; and a send cut in halves to find the records at fault."""

from __future__ import annotations

from dataclasses import dataclass

from agent.journal.batch import TagBatch
from agent.journal.cursor import Position
from agent.journal.record import split_payload
from agent.ledger.tally import Tally


@dataclass(slots=True)
class Step:
    """A batch to send, where its journal record ends, and what the ledger counts of it (None when
    counted before a kill, or once settled)."""

    batch: TagBatch
    position: Position
    tally: Tally | None


def halves(batches: list[TagBatch]) -> tuple[list[TagBatch], list[TagBatch]]:
    """Two lists of batches holding the first and the second half of the events, tags kept.
    A journal batch is cut between its entries' bytes (a record that cannot be decoded is
    carried whole, to its dead letter)."""
    if len(batches) > 1:
        middle = len(batches) // 2
        return batches[:middle], batches[middle:]
    [batch] = batches
    if batch.payload is not None:
        first, second = split_payload(batch.payload)
        return [TagBatch(batch.tag, payload=first)], [TagBatch(batch.tag, payload=second)]
    middle = len(batch.entries) // 2
    return [TagBatch(batch.tag, batch.entries[:middle])], [TagBatch(batch.tag, batch.entries[middle:])]
