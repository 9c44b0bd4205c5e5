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


def test_naver_is_paced_by_default_as_seed_002_asks():
    """Seed 002: bursts of conversions are taken for abuse; no threshold is published."""
    from agent.outputs.naver import NaverOutputConfig

    cfg = NaverOutputConfig.validate({"type": "naver", "name": "naver", "endpoint": "http://relay.example/n"})
    assert cfg.rate_limit == 10.0
    lifted = NaverOutputConfig.validate({**cfg.dump(), "rate_limit": 500})
    assert lifted.rate_limit == 500
