"""The ingest step: what every input does with the events it read, written once.

An input hands :meth:`Ingest.submit` one tag's entries (canonical
``[EventTime, record]`` msgpack, concatenated) and gets back a future that
resolves once they are durable, or None when nothing had to be written. In
between, in this order and nowhere else:

1. the filters whose pattern matches the tag run, in config order. Records
   stay msgpack bytes unless some filter matches; only then are they decoded,
   changed and packed again;
2. the entries the filters kept are journaled: one group commit with whatever
   else is submitted before the event loop next runs;
3. records refused (by a filter, or by the input itself: a tailed line that is
   not JSON) go to the dead-letter store in a worker thread, never on the
   event loop, whose acks must not wait on that file's fsync or on its lock,
   which a replay may hold;
4. once the journal answers, each filter is told whether what it kept is
   durable (:attr:`Filtered.on_durable`: the dedup store commits or releases
   the keys it reserved).

The future resolves when the journal write and the dead letters are both
durable, so an input acknowledges a frame (forward) or moves a position
(tail) only past records that are in the journal or in the dead-letter store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgpack
import msgspec

from agent.component import DeadRecord, Filter, Filtered
from agent.deadletter import DeadLetterStore
from agent.errors import JournalClosed
from agent.journal.batch import other_ext
from agent.journal.journal import Journal
from agent.monitor.tap import Tap
from agent.protocol.forward import array_items
from agent.protocol.forward.entries import array_runs, as_array
from agent.routing import compile_pattern

log = logging.getLogger("agent")

# Records refused, by the name they are dead-lettered under (a filter's or an input's).
Refused = dict[str, list[DeadRecord]]


class Ingest:
    def __init__(self, journal: Journal, filters: list[tuple[str, Filter]], deadletters: DeadLetterStore):
        """``filters``: (match pattern, filter), in config order."""
        self.journal = journal
        self.deadletters = deadletters
        self.set_filters(filters)
        self.taps: list[Tap] = []  # hive-agent tap readers (agent/monitor/tap.py)
        # One thread: dead letters are written in the order they were refused.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deadletters")

    def is_full(self) -> bool:
        """No room for more: the inputs stop reading (and acking) until :meth:`on_room` calls."""
        return self.journal.is_full()

    def on_room(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever room is made again."""
        self.journal.on_room(callback)

    def off_room(self, callback: Callable[[], None]) -> None:
        self.journal.off_room(callback)

    def set_filters(self, filters: list[tuple[str, Filter]]) -> None:
        """The filters batches pass from now on (a reload): a batch under way keeps the ones it had."""
        self._filters = [(compile_pattern(match), f) for match, f in filters]
        self._for_tag: dict[str, list[Filter]] = {}

    @property
    def filters(self) -> list[Filter]:
        """The filters, in config order."""
        return [f for _, f in self._filters]

    def filters_for(self, tag: str) -> list[Filter]:
        found = self._for_tag.get(tag)
        if found is None:
            if len(self._for_tag) > 4096:  # tags are the senders' to choose: bound the cache
                self._for_tag.clear()
            found = self._for_tag[tag] = [f for matches, f in self._filters if matches(tag)]
        return found

    def submit(
        self,
        tag: str,
        entries: bytes,
        count: int,
        *,
        filtered: bool = True,
        target: str | None = None,
        refused: Refused | None = None,
    ) -> asyncio.Future | None:
        """Journal ``count`` entries of ``tag`` (after the filters, unless ``filtered`` is False),
        for every matching output or only ``target``; dead-letter ``refused`` too.

        Raises JournalClosed when the journal takes no writes; then nothing was written at all."""
        on_durable = None
        if count and filtered and self._filters:
            filters = self.filters_for(tag)
            if filters:
                entries, count, on_durable, by_filters = run_filters(filters, tag, entries, count)
                if by_filters:
                    refused = {**(refused or {}), **by_filters}
        journaled = None
        if count:
            for tap in self.taps:
                tap.offer(tag, entries, count)
            try:
                journaled = self.journal.submit(tag, entries, count, target=target)
            except JournalClosed:
                if on_durable is not None:
                    on_durable(False)
                raise
            if on_durable is not None:
                journaled.add_done_callback(lambda f: on_durable(not f.cancelled() and f.exception() is None))
        if not refused:
            return journaled
        written = asyncio.get_running_loop().run_in_executor(self._writer, self._dead_letter, refused)
        return written if journaled is None else when_all([journaled, written])

    def _dead_letter(self, refused: Refused) -> None:
        for source, records in refused.items():
            if records:
                self.deadletters.write_records(source, records)

    def close(self) -> None:
        """After the inputs stopped: wait for the dead letters still being written."""
        self._writer.shutdown(wait=True)


def run_filters(
    filters: list[Filter], tag: str, entries: bytes, count: int
) -> tuple[bytes, int, Callable[[bool], None] | None, Refused]:
    """The filters over one batch: the entries and count they kept, what to call once those are
    durable (or None), and the records they refused by filter name."""
    if len(filters) == 1:
        # A filter that can take the batch as bytes, when all of it is plain sailing.
        done = filters[0].apply_batch(tag, entries, count)
        if done is not None:
            return done.entries, done.count, done.on_durable, _refused_by([(filters[0], done)])
    kept: list[bytes] = []
    results: list[tuple[Filter, Filtered[list[Any]]]] = []
    for run, run_count in _runs(entries, count):
        pairs = _decode(run)  # [[EventTime ext, record], ...]
        for f in filters:
            result = f.apply(tag, pairs)
            pairs, result.entries = result.entries, []  # a run's records live only until it is encoded
            results.append((f, result))
        kept.append(_encode(pairs))
        count -= run_count - len(pairs)
    return b"".join(kept), count, _all_of([r.on_durable for _, r in results]), _refused_by(results)


# The per-record way takes a batch a run of entries at a time, as the Hive filter's batch path does
# (agent/hive/fast_path.py): a batch of 1,000 records decoded whole was 3-4 MB of small objects
# alive at once, and what a burst leaves in the allocator follows the most alive at one moment.
RUN = 128


def _runs(entries: bytes, count: int) -> list[tuple[bytes, int]]:
    """Each run of at most RUN entries as an encoded array (an array32 header and its entries), and
    its count; the whole batch as one run when it is no longer, or when it does not walk as msgpack
    (the decoder's fallback takes it whole)."""
    whole = as_array(entries, count)
    if count <= RUN:
        return [(whole, count)]
    try:
        return [(run, int.from_bytes(run[1:5], "big")) for run in array_runs(whole, RUN)]
    except msgspec.DecodeError:
        return [(whole, count)]


def _refused_by(results: Sequence[tuple[Filter, Filtered[list[Any]] | Filtered[bytes]]]) -> Refused:
    refused: Refused = {}
    for f, r in results:
        if r.refused:
            refused.setdefault(f.name, []).extend(r.refused)
    return refused


def _all_of(callbacks: list) -> Callable[[bool], None] | None:
    callbacks = [c for c in callbacks if c is not None]
    if len(callbacks) < 2:
        return callbacks[0] if callbacks else None

    def every(durable: bool) -> None:
        for c in callbacks:
            c(durable)

    return every


def when_all(futures: list[asyncio.Future]) -> asyncio.Future:
    """A future that resolves, to the first one's result, once all have; it fails as the first of
    them (in that order) that failed, and is cancelled if one was."""
    if len(futures) == 1:
        return futures[0]
    every = futures[0].get_loop().create_future()

    def done(_: asyncio.Future) -> None:
        if every.done() or not all(f.done() for f in futures):
            return
        if any(f.cancelled() for f in futures):
            every.cancel()
            return
        failed = [exc for exc in (f.exception() for f in futures) if exc is not None]
        if failed:
            every.set_exception(failed[0])
        else:
            every.set_result(futures[0].result())

    for f in futures:
        f.add_done_callback(done)
    return every


# msgspec decodes and encodes a batch in one call each, about twice as fast as
# msgpack-python; msgpack takes over for what msgspec refuses (invalid UTF-8).
_decoder = msgspec.msgpack.Decoder()
_encoder = msgspec.msgpack.Encoder()


def _decode(array: bytes) -> list:
    """The entries of an encoded array that has an array32 header (five bytes)."""
    try:
        return _decoder.decode(array)
    except (msgspec.DecodeError, ValueError):
        unpacker = msgpack.Unpacker(
            raw=False,
            strict_map_key=False,
            unicode_errors="surrogateescape",
            max_buffer_size=max(len(array), 1024),
            ext_hook=other_ext,
        )
        unpacker.feed(memoryview(array)[5:])  # the entries one by one, as many as there are
        return list(unpacker)


def _encode(pairs: list) -> bytes:
    try:
        data = _encoder.encode(pairs)
    except (TypeError, ValueError, UnicodeEncodeError):
        packer = msgpack.Packer(unicode_errors="surrogateescape")
        return b"".join(packer.pack(p) for p in pairs)
    return array_items(data)
