"""The monitor in-process: /metrics carries what the components report, with their labels."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import aiohttp

from agent.config.document import AgentConfig
from agent.filters.hive import HiveFilter, HiveFilterConfig
from agent.inputs.forward import ForwardInput, ForwardInputConfig
from agent.metrics import Monitor
from tests.integration.test_monitor import metric


async def test_metrics_name_each_component_with_its_kind_type_and_readings(ingest, journal, tmp_path):
    cfg = AgentConfig.model_validate(
        {
            "agent": {"data_dir": str(tmp_path)},
            "inputs": [{"type": "forward", "name": "in", "port": 0}],
            "filters": [{"type": "hive", "name": "hive", "dedup_window": 0}],
            "outputs": [{"type": "stdout", "name": "console"}],
        }
    )
    forward = ForwardInput(ForwardInputConfig(type="forward", name="in", port=0), ingest)
    forward.stats.records, forward.stats.bytes, forward.stats.skipped_records = 5, 500, 2
    hive = HiveFilter(HiveFilterConfig(type="hive", name="hive", dedup_window=0))
    hive.stats.valid, hive.stats.invalid = 7, 1
    hive.stats.invalid_by_rule[("currency", "too_long")] = 1
    app = SimpleNamespace(
        cfg=cfg,
        inputs=[forward],
        ingest=SimpleNamespace(filters=[hive]),
        deliveries=[],
        journal=journal,
        paths=SimpleNamespace(delivery_snapshot=lambda g: tmp_path / "none.json", root=tmp_path),
        cursors=SimpleNamespace(load=lambda name: None),
    )
    monitor = Monitor(app, "127.0.0.1", 0)
    await monitor.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{monitor.port}/metrics") as resp:
                text = await resp.text()
    finally:
        await monitor.stop()
        await asyncio.sleep(0)
    assert metric(text, "hive_agent_component_received_events_total", component="in", kind="input", type="forward") == 5
    assert metric(text, "hive_agent_component_received_bytes_total", component="in") == 500
    assert metric(text, "hive_agent_component_discarded_events_total", component="in", reason="invalid_entry") == 2
    assert metric(text, "hive_agent_component_received_events_total", component="hive", kind="filter") == 8
    assert metric(text, "hive_agent_component_dead_lettered_events_total", component="hive") == 1
    assert metric(text, "hive_agent_invalid_events_total", component="hive", field="currency", rule="too_long") == 1


def test_a_tap_never_blocks_and_counts_what_a_slow_reader_lost():
    from agent.metrics import _is_loopback
    from agent.tap import MAX_HELD_BYTES, MAX_WAITING, Tap

    tap = Tap("a.**")
    for _ in range(MAX_WAITING + 3):
        tap.offer("a.b", b"", 10)
    tap.offer("b.c", b"", 10)  # not asked for: neither kept nor counted
    assert tap.waiting.qsize() == MAX_WAITING and tap.dropped == 30
    big = Tap("**")  # a few huge batches hold no more than MAX_HELD_BYTES
    for _ in range(3):
        big.offer("t", b"x" * (MAX_HELD_BYTES // 2), 1)
    assert big.waiting.qsize() == 2 and big.held == MAX_HELD_BYTES and big.dropped == 1
    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and not _is_loopback("10.1.2.3")
    assert not _is_loopback(None)


async def test_taps_are_bounded_in_number_and_a_bad_pattern_is_refused(tmp_path):
    from agent.tap import MAX_TAPS, Tap

    app = SimpleNamespace(ingest=SimpleNamespace(taps=[]))
    monitor = Monitor(app, "127.0.0.1", 0)
    await monitor.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{monitor.port}/api/tap", params={"match": "/(/"}) as resp:
                assert resp.status == 400 and "match" in await resp.text()
            app.ingest.taps.extend(Tap("**") for _ in range(MAX_TAPS))
            async with session.get(f"http://127.0.0.1:{monitor.port}/api/tap") as resp:
                assert resp.status == 503
    finally:
        await monitor.stop()
