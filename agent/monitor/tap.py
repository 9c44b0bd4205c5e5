"""``hive-agent tap``: the events flowing through the agent now, after the filters.

The ingest step offers each batch it is about to journal to every open tap
whose pattern matches the tag. A tap holds at most ``MAX_WAITING`` batches and
``MAX_HELD_BYTES`` of them: a reader slower than the agent loses batches
(counted, and said in the stream), it never slows the pipeline nor holds its
memory, and it shows at most ``TAP_EVENTS_PER_SECOND`` events a second, so that
what it renders stays small beside the pipeline's own work. At most
``MAX_TAPS`` are open at once. The monitor serves taps on its control socket
only (0600: the agent's user), and every line goes through the secret
scrubber, as logs do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.routing import compile_pattern

MAX_WAITING = 256  # batches a tap holds for a slow reader before it drops
MAX_HELD_BYTES = 16 * 1024 * 1024  # and their bytes (a batch may be a 16 MiB frame)
MAX_TAPS = 8
# Events a tap renders a second, at most (a burst of as many). Rendering is JSON of every record
# and the secret scrubber over it: eight taps of everything cut ingest from 323,800 to 36,333
# events/s. A tap is for a person to read: past this it shows batches as they fit, and says how
# many events it left out.
TAP_EVENTS_PER_SECOND = 2000


@dataclass
class Tap:
    pattern: str
    dropped: int = 0  # events (not batches) lost to a slow reader since the last report
    held: int = 0  # bytes of the batches waiting
    waiting: asyncio.Queue[tuple[str, bytes, int]] = field(default_factory=lambda: asyncio.Queue(MAX_WAITING))
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._matches = compile_pattern(self.pattern)
        self._allowance = float(TAP_EVENTS_PER_SECOND)  # a token bucket of events
        self._refilled = self.clock()

    def offer(self, tag: str, entries: bytes, count: int) -> None:
        """Never blocks: a full tap, or one past its events a second, drops the batch and counts
        its events."""
        if not self._matches(tag):
            return
        now = self.clock()
        self._allowance = min(
            float(TAP_EVENTS_PER_SECOND), self._allowance + (now - self._refilled) * TAP_EVENTS_PER_SECOND
        )
        self._refilled = now
        if count > self._allowance and self._allowance < TAP_EVENTS_PER_SECOND:
            self.dropped += count  # (a batch larger than a whole second's worth waits for a full bucket)
            return
        if self.held + len(entries) > MAX_HELD_BYTES:
            self.dropped += count
            return
        try:
            self.waiting.put_nowait((tag, entries, count))
        except asyncio.QueueFull:
            self.dropped += count
            return
        self.held += len(entries)
        self._allowance -= count

    async def next(self) -> tuple[str, bytes, int]:
        """The next batch for the reader: (tag, entries, count)."""
        item = await self.waiting.get()
        self.held -= len(item[1])
        return item
