"""The delivery loop, written once for every output.

Per output: read the journal from its cursor → keep the events its ``match``
selects → ``send`` → OK / RETRY / FATAL. RETRY waits on the backoff schedule
and sends the same events again; FATAL, or retries running out, writes the
events to the dead-letter store. The cursor moves only past what was
delivered or dead-lettered, and only after the output's ``flush`` made it
durable, so a crash repeats at most the last send, never loses one; an output
that learns piece by piece what the destination took (the forward output's
acks, ``send_with_progress``) has it saved as it does.

A failure caused by the records themselves (an exception that is no I/O or
network error, or an OS error that names the request: a file name too long,
an invalid argument) is no reason to wait: the batch is split in halves, sent
again, until the record(s) at fault stand alone; those are dead-lettered with
the error and every other record is delivered. Local I/O of the loop itself
(the cursor, the dead-letter store) that fails, a full disk say, is retried
with backoff: the loop never dies of it, and the cursor never passes records
that were neither delivered nor dead-lettered.

The ledger (agent/ledger/) learns what became of each purchase: delivered, refused with the dead
letter's reason, or skipped (a refund this output has no form for, a mirror's test purchase or
duplicate). The loop settles that with the ledger just before it saves the cursor, and counts
nothing at or before the output's ledger mark: a batch sent again after a kill is counted once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import msgpack

from agent.bytesearch import contains
from agent.component import Outcome, Output, SendResult, caused_by_records
from agent.config.types import OutputConfigBase
from agent.deadletter import DeadLetterStore
from agent.delivery.retry import RetrySchedule, sleep_unless, sleep_unless_either
from agent.delivery.snapshot import OutputSnapshot, RunnerStats
from agent.delivery.steps import Step, halves
from agent.hive.records import is_refund
from agent.journal.batch import TagBatch
from agent.journal.cursor import CursorStore, Position
from agent.journal.reader import JournalReader, JournalRecord
from agent.journal.record import batch_target, peek_tag
from agent.ledger.output import OutputLedger
from agent.ledger.tally import Tally, reason_code
from agent.routing import compile_pattern
from agent.secrets import scrub

log = logging.getLogger("agent.delivery")

T = TypeVar("T")

# What one read of the journal takes at most (a single larger record is still read whole). The
# batch an output gets is decoded into Python objects at several times its size, and what a
# burst leaves in the allocator follows the largest batch: 1 MiB keeps a burst under 100 MB
# with no loss of throughput against 4 MiB (bench/footprint.py, bench/forward_ingest.py).
READ_AHEAD_BYTES = 1 << 20
POLL_MIN = 0.005
POLL_MAX = 0.1
# Between the durable commits (every commit_interval), the cursor is saved without an fsync at most
# this often: a kill repeats about this much of the output's stream (tests/integration/test_soak.py:
# 3% of the records twice at 25ms, with 60,000 records a second through the relay).
SAVE_SOON_INTERVAL = 0.005
LOCAL_IO_RETRY_MAX = 30.0  # seconds between tries of the loop's own disk writes


class OutputRunner:
    def __init__(
        self,
        cfg: OutputConfigBase,
        output: Output,
        journal_dir: Path,
        cursors: CursorStore,
        deadletters: DeadLetterStore,
        *,
        commit_interval: float = 0.2,
        ledger: OutputLedger | None = None,
    ):
        self.cfg = cfg
        self.name = cfg.name
        self.output = output
        self.matches = compile_pattern(cfg.routing_match)
        self.cursors = cursors
        self.deadletters = deadletters
        self.commit_interval = commit_interval
        self.batch_bytes = cfg.batch_bytes
        self.schedule = RetrySchedule(cfg.retry_wait, cfg.retry_max_interval, cfg.retry_timeout, cfg.retry_forever)
        self.skips_refunds = cfg.skips_refunds
        self.refund_values = tuple(cfg.refund_values)
        # The refund field's name as msgpack writes it: a batch without these bytes holds no refund (a
        # byte search, agent/bytesearch.py; a decode of every purchase batch cost delivery 15-30%).
        self._refund_key = msgpack.packb(cfg.refund_field)
        self.reader = JournalReader(journal_dir, cursors.load(self.name))
        self.stats = RunnerStats()
        self.caught_up = False
        self.paused = False
        self.last_error = ""  # why it retries or is paused, while it does (scrubbed in the snapshot)
        self._draining: asyncio.Event | None = None  # set by run(): the shutdown's drain
        self.oldest_pending_ns: int | None = None
        self.last_success_ns: int | None = None  # wall clock of the last send the destination took
        self.delivered_to: Position | None = None
        self.ledger = ledger
        self._tally: Tally | None = None  # the batches being sent, when the ledger counts them
        self._saved_at = 0.0  # monotonic time of the last save between the durable commits
        # How far a send cut short delivered: the ledger counted it, the cursor saves no earlier.
        self._progress: Position | None = None
        self._progress_lock = asyncio.Lock()

    def snapshot(self) -> OutputSnapshot:
        """What the monitor shows of this output (the main process serves it)."""
        position = self.reader.position if self.caught_up else self.delivered_to
        return OutputSnapshot(
            type=self.cfg.type,
            match=self.cfg.match,
            **dataclasses.asdict(self.stats),
            output_stats=dict(self.output.counters()),
            retrying=self.schedule.steps > 0,
            retry_steps=self.schedule.steps,
            paused=self.paused,
            last_error=scrub(self.last_error)[:300] if self.paused or self.schedule.steps else "",
            caught_up=self.caught_up,
            oldest_pending_ns=self.oldest_pending_ns,
            last_success_ns=self.last_success_ns,
            position=(position.segment, position.offset) if position else None,
        )

    async def run(self, draining: asyncio.Event, stopping: asyncio.Event) -> None:
        self._draining = draining
        delivered: Position | None = None
        committed_at = time.monotonic()
        idle = POLL_MIN
        try:
            while not stopping.is_set():
                # Where this output stands: everything before it is delivered.
                self.delivered_to = self.reader.position
                records = self.reader.read(min(self.batch_bytes, READ_AHEAD_BYTES))
                if not records:
                    self.caught_up = True
                    self.oldest_pending_ns = None
                    if delivered is not None:
                        await self._commit(delivered, stopping)
                        delivered = None
                    if draining.is_set():
                        return
                    await sleep_unless(stopping, idle)
                    idle = min(idle * 2, POLL_MAX)
                    continue
                self.caught_up = False
                self.oldest_pending_ns = records[0].appended_ns
                idle = POLL_MIN
                end = records[-1].next
                # No local keeps the batches (or their decoded entries) once sent: an idle loop
                # holds nothing of the last burst.
                self._progress = None
                if not await self._deliver_selected(records, stopping):
                    # Stopped while retrying: the cursor stays before these records, past those a
                    # send delivered on the way.
                    if self._progress is not None:
                        delivered = self._progress
                    return
                records = []
                delivered = end
                if time.monotonic() - committed_at >= self.commit_interval:
                    await self._commit(delivered, stopping)
                    delivered = None
                    committed_at = time.monotonic()
                elif not self.output.flush_needed:
                    await self._save_soon(delivered)
        finally:
            if delivered is not None:
                await self._commit(delivered, stopping)
            self.reader.close()

    async def _deliver_selected(self, records: list[JournalRecord], stopping: asyncio.Event) -> bool:
        """Deliver the records this output takes; False if stopped while retrying. Records the
        ledger counted already (sent again after a kill) go first, in a send of their own."""
        ledger = self.ledger
        counting = Tally() if ledger is not None else None  # of the records up to the next step
        again: list[Step] = []
        steps: list[Step] = []
        for r in records:
            tag = peek_tag(r.payload)
            target = batch_target(r.payload)
            if (target == self.name) if target is not None else self.matches(tag):
                batch = TagBatch(tag, payload=r.payload)
                tally = counting if ledger is not None and ledger.counts(r) else None
                if ledger is not None and tally is not None:
                    ledger.sent(r, batch, target is not None, tally)
                if self.skips_refunds and contains(r.payload, self._refund_key):
                    batch = self._without_refunds(batch, tally)
                    if not len(batch):
                        continue  # its refunds are settled with the next step
                if tally is None:
                    again.append(Step(batch, r.next, None))
                else:
                    steps.append(Step(batch, r.next, tally))
                    counting = Tally()
        for selected, moves in ((again, None), (steps, Tally() if ledger is not None else None)):
            if selected:
                self._tally = moves  # what the send's outcome refuses or skips
                try:
                    if not await self._deliver([s.batch for s in selected], stopping, selected):
                        return False
                finally:
                    self._tally = None
                if ledger is not None:
                    self._step_through(selected)
                    if moves is not None:
                        ledger.done(moves)
        if ledger is not None and counting:
            ledger.done(counting)
        return True

    def _step_through(self, steps: list[Step]) -> None:
        """These steps are delivered: their counts join what the next settle adds, and the loop
        saves the cursor no earlier than past them (``_progress``)."""
        for step in steps:
            if step.tally is not None:
                if self.ledger is not None:
                    self.ledger.done(step.tally)
                step.tally = None
            self._progress = step.position

    def _counted_as(self, state: str, tag: str, time_ns: object, record: object, reason: str) -> None:
        if self.ledger is not None:
            self.ledger.counted_as(self._tally, state, tag, time_ns, record, reason)

    def _without_refunds(self, batch: TagBatch, tally: Tally | None) -> TagBatch:
        """The batch without its refunds: rendered to the Hive spec, a refund would be its purchase
        again (the same transaction_id, a positive price), and the spec has no field to say otherwise."""
        kept = []
        for e in batch.entries:
            if not is_refund(e[1], self.cfg.refund_field, self.refund_values):
                kept.append(e)
            elif self.ledger is not None:
                self.ledger.counted_as(tally, "skipped", batch.tag, e[0], e[1], "refund")
        skipped = len(batch) - len(kept)
        if not skipped:
            return batch
        self.stats.refunds_skipped += skipped
        return TagBatch(batch.tag, kept)

    async def _commit(self, position: Position, stopping: asyncio.Event) -> None:
        async def commit() -> bool:
            await self.output.flush()
            if self.ledger is not None:
                # Before the cursor: a kill between the two sends these records again, and the
                # ledger's mark keeps them from being counted again.
                await self.ledger.settle(position)
            self.cursors.save(self.name, position)
            return True

        await self._local_io("save its cursor", commit, stopping)  # given up when stopping: repeats, never loses

    async def _save_soon(self, position: Position) -> None:
        """After every batch, between the durable commits: the ledger's settle and the cursor without
        an fsync. A SIGKILL keeps both (they are in the OS's cache), so a kill repeats one batch, not
        ``commit_interval`` of them; a power loss at worst repeats from the last durable save. Only for
        an output whose send is durable when it returns (a flush would have to come first). A failure
        (a full disk) is the durable commit's to retry, which waits for room."""
        now = time.monotonic()
        if now - self._saved_at < SAVE_SOON_INTERVAL:
            return
        self._saved_at = now
        try:
            if self.ledger is not None:
                await self.ledger.settle(position)
            self.cursors.save(self.name, position, durable=False)
        except (OSError, sqlite3.Error):
            self.stats.local_io_errors += 1

    async def _local_io(self, what: str, action: Callable[[], Awaitable[T]], stopping: asyncio.Event) -> T | None:
        """Run the loop's own disk write until it succeeds (backoff up to LOCAL_IO_RETRY_MAX);
        None if ``stopping`` is or gets set first."""
        wait = 0.1
        while True:
            try:
                return await action()
            except (OSError, sqlite3.Error) as exc:  # the ledger's SQLite says "database or disk is full"
                self.stats.local_io_errors += 1
                why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                log.error("output %s: cannot %s: %s; trying again in %.1fs", self.name, what, why, wait)
            if stopping.is_set() or await sleep_unless(stopping, wait):
                return None
            wait = min(wait * 2, LOCAL_IO_RETRY_MAX)

    async def _send(self, batches: list[TagBatch], steps: list[Step] | None) -> tuple[Outcome, int]:
        """The output's send, and how many of the batches it delivered whole on the way (with
        ``steps``, for an output whose send is durable when it returns: the cursor is saved there,
        so that a kill in a long send repeats what was on the way, not the whole send)."""
        through = 0

        async def progress(n: int) -> None:
            nonlocal through
            async with self._progress_lock:  # one settle at a time: the ledger's tallies are shared
                if steps is None or n <= through:
                    return
                self._step_through(steps[through:n])
                through = n
                await self._save_soon(steps[n - 1].position)

        try:
            if steps is None or self.output.flush_needed:
                return await self.output.send(batches), 0
            return await self.output.send_with_progress(batches, progress), through
        except Exception as exc:  # an output bug must not kill delivery for good
            if caused_by_records(exc):
                return Outcome.rejected(scrub(f"{type(exc).__name__}: {exc}")[:500]), through
            log.warning("output %s: send raised %r", self.name, exc)
            return Outcome.retry(f"send raised {exc!r}"), through

    async def _deliver(self, batches: list[TagBatch], stopping: asyncio.Event, steps: list[Step] | None = None) -> bool:
        count = sum(len(b) for b in batches)
        content_failures = 0  # in a row: the second one splits the batch
        while True:
            outcome, through = await self._send(batches, steps)
            if through and outcome.result is not SendResult.OK and steps is not None:
                # Delivered before the failure: what follows (retries, dead letters) is for the rest.
                done = sum(len(b) for b in batches[:through])
                self.stats.sent_records += done
                count -= done
                batches, steps = batches[through:], steps[through:]
                if not batches:
                    return True
            if outcome.result is SendResult.REJECTED:
                content_failures += 1
                if content_failures >= 2:  # the same records fail the same way: find which
                    return await self._isolate(batches, outcome.reason, stopping)
                continue
            if outcome.result is SendResult.OK:
                self.last_success_ns = time.time_ns()
                if self.schedule.steps or self.paused:
                    log.info("output %s: delivering again after %d retries", self.name, self.schedule.steps)
                self.schedule.reset()
                self.paused = False
                for tag, time_ns, record, why in outcome.skipped:
                    self._counted_as("skipped", tag, time_ns, record, why)
                if outcome.dead:
                    if not await self._write_dead(outcome.dead, stopping):
                        return False
                    unsent, refused = outcome.dead[: outcome.unsent], outcome.dead[outcome.unsent :]
                    for dead, how in ((unsent, "refused before sending"), (refused, "refused by the destination")):
                        if dead:
                            log.error(
                                "output %s: %d records %s, dead-lettered: %s", self.name, len(dead), how, dead[0][3]
                            )
                self.stats.sent_records += count - len(outcome.dead)
                self.stats.batches += 1
                return True
            if outcome.result is not SendResult.OK:
                self.last_error = outcome.reason
            if outcome.result is SendResult.PAUSE:
                # Credentials refused: retrying fast helps nobody and giving up would
                # lose the backlog. Alert, wait the longest interval, try again.
                self.paused = True
                self.stats.pauses += 1
                log.error(
                    "output %s: PAUSED: %s; %d records wait in the journal; next try in %.0fs",
                    self.name,
                    outcome.reason,
                    count,
                    self.cfg.retry_max_interval,
                )
                # Draining at shutdown: a destination that refuses us will not take the backlog
                # within shutdown_timeout either; it stays in the journal for the next start.
                draining = self._draining
                if draining is not None and (
                    draining.is_set() or await sleep_unless_either(stopping, draining, self.cfg.retry_max_interval)
                ):
                    log.info("output %s: paused at shutdown; its %d records stay in the journal", self.name, count)
                    return False
                if draining is None and await sleep_unless(stopping, self.cfg.retry_max_interval):
                    return False
                continue
            if outcome.result is SendResult.FATAL:
                return await self._dead_letter(batches, outcome.reason, stopping)
            wait = self.schedule.next_wait(time.monotonic())
            if wait is None:
                self.schedule.reset()
                return await self._dead_letter(
                    batches, f"retry_timeout reached; last error: {outcome.reason}", stopping
                )
            self.stats.retries += 1
            log.warning(
                "output %s: %d records not delivered (%s); retry %d in %.1fs",
                self.name,
                count,
                outcome.reason,
                self.schedule.steps,
                wait,
            )
            if await sleep_unless(stopping, wait):
                return False

    async def _isolate(self, batches: list[TagBatch], reason: str, stopping: asyncio.Event) -> bool:
        """The records made the send fail: halve until the ones at fault stand alone."""
        count = sum(len(b) for b in batches)
        if count <= 1:
            return await self._dead_letter(batches, f"rejected: {reason}", stopping)
        log.warning(
            "output %s: %d records failed because of their content (%s); splitting the batch to "
            "find the records at fault",
            self.name,
            count,
            reason,
        )
        for half in halves(batches):
            if not await self._deliver(half, stopping):
                return False
        return True

    async def _write_dead(self, items: list, stopping: asyncio.Event) -> bool:
        """Dead-letter the records the destination refused: (tag, time_ns, record, reason)."""
        if await self._to_dead_letters(stopping, self.deadletters.write_records, self.name, items) is None:
            return False
        for tag, time_ns, record, reason in items:
            self._counted_as("refused", tag, time_ns, record, reason_code(reason))
        return True

    async def _dead_letter(self, batches: list[TagBatch], reason: str, stopping: asyncio.Event) -> bool:
        n = await self._to_dead_letters(stopping, self.deadletters.write, self.name, reason, batches)
        if n is None:
            return False
        log.error("output %s: %d records dead-lettered: %s", self.name, n, reason)
        if self._tally is not None:
            code = reason_code(reason)
            for b in batches:
                for time_ns, record in b.entries:
                    self._counted_as("refused", b.tag, time_ns, record, code)
        return True

    async def _to_dead_letters(self, stopping: asyncio.Event, write: Callable[..., int], *args: object) -> int | None:
        """How many records ``write`` put in the store; None when stopping came first. In a
        thread: the store's lock and fsync never hold up the loop."""

        async def action() -> int:
            return await asyncio.get_running_loop().run_in_executor(None, write, *args)

        n = await self._local_io("write dead letters", action, stopping)
        if n is not None:
            self.stats.dead_lettered += n
        return n
