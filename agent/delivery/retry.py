"""The retry schedule: exponential backoff with jitter and a cap. It never sleeps; the delivery
loop sleeps with ``sleep_unless``, which a stop cuts short.

Fluentd's ``exponential_backoff``: wait = retry_wait * 2**n, capped at
retry_max_interval, with +/- randomness; give up (dead letter, never drop)
once ``retry_timeout`` has passed since the first failure, unless
``retry_forever``.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field


@dataclass
class RetrySchedule:
    retry_wait: float = 1.0
    retry_max_interval: float = 60.0
    retry_timeout: float = 72 * 3600.0
    retry_forever: bool = False
    randomization: float = 0.125
    rng: random.Random = field(default_factory=random.Random)
    steps: int = 0
    first_failure: float | None = None

    def next_wait(self, now: float) -> float | None:
        """Seconds to wait before the next attempt, or None when it is time to give up."""
        if self.first_failure is None:
            self.first_failure = now
        elif not self.retry_forever and now - self.first_failure >= self.retry_timeout:
            return None
        wait = min(self.retry_wait * (2 ** min(self.steps, 62)), self.retry_max_interval)
        self.steps += 1
        jitter = wait * self.randomization
        wait = max(0.0, wait + self.rng.uniform(-jitter, jitter))
        if not self.retry_forever:
            wait = min(wait, max(0.0, self.first_failure + self.retry_timeout - now))
        return wait

    def reset(self) -> None:
        self.steps = 0
        self.first_failure = None


async def sleep_unless_either(first: asyncio.Event, second: asyncio.Event, timeout: float) -> bool:
    """Sleep up to ``timeout``; True if either event was set meanwhile."""
    waits = [asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())]
    try:
        done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
    return bool(done)


async def sleep_unless(event: asyncio.Event, timeout: float) -> bool:
    """Sleep up to ``timeout``; True if ``event`` was set meanwhile."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
        return True
    except TimeoutError:
        return False
