"""The mirrors' rate limit spaces request starts evenly (AppsFlyer asks for under 1,000/s)."""

import asyncio
import time

from agent.outputs.mirror import RateLimit


async def test_starts_are_spaced_by_the_rate():
    limit = RateLimit(50)  # one start every 20 ms
    starts = []

    async def start():
        await limit.wait()
        starts.append(time.monotonic())

    await asyncio.gather(*(start() for _ in range(11)))
    assert starts[-1] - starts[0] >= 10 * 0.02 * 0.9


async def test_no_rate_means_no_wait():
    limit = RateLimit(None)
    begin = time.monotonic()
    for _ in range(1000):
        await limit.wait()
    assert time.monotonic() - begin < 0.1
