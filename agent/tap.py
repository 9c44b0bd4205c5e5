"""``hive-agent tap``: the events flowing through the agent now, after the filters.

The ingest step offers each batch it is about to journal to every open tap
whose pattern matches the tag. A tap holds at most ``MAX_WAITING`` batches and
``MAX_HELD_BYTES`` of them: a reader slower than the agent loses batches
(counted, and said in the stream), it never slows the pipeline nor holds its
memory. At most ``MAX_TAPS`` are open at once. The monitor serves taps on its
control socket only (0600: the agent's user), and every line goes through the
secret scrubber, as logs do.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from agent.routing import compile_pattern

MAX_WAITING = 256  # batches a tap holds for a slow reader before it drops
MAX_HELD_BYTES = 16 * 1024 * 1024  # and their bytes (a batch may be a 16 MiB frame)
MAX_TAPS = 8


@dataclass
class Tap:
    pattern: str
    dropped: int = 0  # events (not batches) lost to a slow reader since the last report
    held: int = 0  # bytes of the batches waiting
    waiting: asyncio.Queue[tuple[str, bytes, int]] = field(default_factory=lambda: asyncio.Queue(MAX_WAITING))

    def __post_init__(self) -> None:
        self._matches = compile_pattern(self.pattern)

    def offer(self, tag: str, entries: bytes, count: int) -> None:
        """Never blocks: a full tap drops the batch and counts its events."""
        if not self._matches(tag):
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

    async def next(self) -> tuple[str, bytes, int]:
        """The next batch for the reader: (tag, entries, count)."""
        item = await self.waiting.get()
        self.held -= len(item[1])
        return item
