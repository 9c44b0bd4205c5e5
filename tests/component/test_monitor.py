"""The monitor in-process: /metrics carries what the components report, with their labels."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from types import SimpleNamespace

import aiohttp

from agent.config.document import AgentConfig
from agent.filters.hive import HiveFilter, HiveFilterConfig
from agent.inputs.forward import ForwardInput, ForwardInputConfig
from agent.monitor.server import COUNT_CACHE_SECONDS, Monitor
from agent.reload import ReloadStats
from tests.integration.test_monitor import metric


async def test_metrics_name_each_component_with_its_kind_type_and_readings(ingest, journal, tmp_path):
    cfg = AgentConfig.validate(
        {
            "agent": {"data_dir": str(tmp_path)},
            "inputs": [{"type": "forward", "name": "in", "port": 0}],
            "filters": [{"type": "hive", "name": "hive", "dedup_window": 0}],
            "outputs": [{"type": "stdout", "name": "console"}],
        }
    )
    forward = ForwardInput(ForwardInputConfig.validate(dict(type="forward", name="in", port=0)), ingest)
    forward.stats.records, forward.stats.bytes, forward.stats.skipped_records = 5, 500, 2
    hive = HiveFilter(HiveFilterConfig.validate(dict(type="hive", name="hive", dedup_window=0)))
    hive.stats.valid, hive.stats.invalid = 7, 1
    hive.stats.invalid_by_rule[("currency", "too_long")] = 1
    app = SimpleNamespace(
        cfg=cfg,
        inputs=[forward],
        ingest=SimpleNamespace(filters=[hive]),
        deliveries=[],
        journal=journal,
        paths=SimpleNamespace(
            delivery_snapshot=lambda g: tmp_path / "none.json", root=tmp_path, ledger=tmp_path / "no-ledger.sqlite"
        ),
        cursors=SimpleNamespace(load=lambda name: None),
        reloader=SimpleNamespace(stats=ReloadStats()),
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


def test_a_tap_shows_at_most_its_events_a_second_and_counts_the_rest():
    """Eight taps of everything rendered every event: ingest fell from 323,800 to 36,333 events/s.
    A tap renders at most TAP_EVENTS_PER_SECOND; what it leaves out is counted and said."""
    from agent.monitor.tap import TAP_EVENTS_PER_SECOND, Tap

    now = [0.0]
    tap = Tap("**", clock=lambda: now[0])
    for _ in range(300):  # 300,000 events in one instant: a second of a busy agent
        tap.offer("t", b"x", 1000)
    shown = tap.waiting.qsize() * 1000
    assert shown == TAP_EVENTS_PER_SECOND and tap.dropped == 300_000 - shown
    now[0] += 0.5  # half a second later, half a second's worth again
    for _ in range(11):
        tap.offer("t", b"x", 100)
    assert tap.waiting.qsize() == 2 + 10 and tap.dropped == 300_000 - shown + 100


def test_a_tap_never_blocks_and_counts_what_a_slow_reader_lost():
    from agent.monitor.server import _is_loopback
    from agent.monitor.tap import MAX_HELD_BYTES, MAX_WAITING, Tap

    ticks = iter(range(10**6))
    tap = Tap("a.**", clock=lambda: float(next(ticks)))  # a second between batches: never over the rate
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
    from agent.monitor.tap import MAX_TAPS, Tap

    app = SimpleNamespace(ingest=SimpleNamespace(taps=[]))
    monitor = Monitor(app, "127.0.0.1", 0, tmp_path / "state" / "control.sock")
    await monitor.start()
    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(str(monitor.control_socket))) as session:
            async with session.get("http://agent/api/tap", params={"match": "/(/"}) as resp:
                assert resp.status == 400 and "match" in await resp.text()
            app.ingest.taps.extend(Tap("**") for _ in range(MAX_TAPS))
            async with session.get("http://agent/api/tap") as resp:
                assert resp.status == 503
    finally:
        await monitor.stop()


async def test_the_tap_is_never_served_on_tcp_and_its_socket_is_the_agents_users_alone(tmp_path):
    from agent.monitor.tap import MAX_TAPS

    app = SimpleNamespace(ingest=SimpleNamespace(taps=[]))
    monitor = Monitor(app, "127.0.0.1", 0, tmp_path / "state" / "control.sock")
    await monitor.start()
    try:
        assert stat.S_IMODE(os.stat(monitor.control_socket).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(monitor.control_socket.parent).st_mode) == 0o700
        async with aiohttp.ClientSession() as session:
            # any local user reaches loopback: as many TCP readers as there are taps, and more, get none
            for _ in range(MAX_TAPS + 2):
                async with session.get(f"http://127.0.0.1:{monitor.port}/api/tap") as resp:
                    assert resp.status == 403
        assert app.ingest.taps == []
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(str(monitor.control_socket))) as session:
            async with session.get("http://agent/api/tap") as resp:
                assert resp.status == 200 and len(app.ingest.taps) == 1  # the operator's own tap still opens
    finally:
        await monitor.stop()


async def test_a_stale_control_socket_is_replaced_and_a_path_too_long_leaves_the_monitor_up(tmp_path):
    import socket

    stale = tmp_path / "state" / "control.sock"
    stale.parent.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX) as old:
        old.bind(str(stale))  # an earlier run's, left behind by kill -9
    app = SimpleNamespace(ingest=SimpleNamespace(taps=[]))
    monitor = Monitor(app, "127.0.0.1", 0, stale)
    await monitor.start()
    assert monitor.control is not None
    await monitor.stop()
    long = tmp_path / ("d" * 120) / "control.sock"
    monitor = Monitor(app, "127.0.0.1", 0, long)
    await monitor.start()
    try:
        assert monitor.control is None and monitor.port  # no tap, but metrics and health stand
    finally:
        await monitor.stop()


async def test_status_and_config_are_answered_on_tcp_to_this_hosts_clients_only(tmp_path):
    from agent.monitor.http import Request
    from agent.monitor.server import LOOPBACK_ONLY, _loopback_only

    async def answer(request):
        return "answered"

    guarded = _loopback_only(answer)
    for path in LOOPBACK_ONLY:
        remote = Request("GET", path, {}, "10.1.2.3", None, None)  # type: ignore[arg-type]
        assert (await guarded(remote)).status == 403
        assert await guarded(Request("GET", path, {}, "127.0.0.1", None, None)) == "answered"  # type: ignore[arg-type]


async def test_clients_polling_status_read_the_journal_once_a_second_not_once_a_request(journal, tmp_path):
    """Each status counts an output's events in its current segment from disk: eight pollers did
    it eight times per poll, a segment read each (main RSS 61 -> 379 MB)."""
    cfg = AgentConfig.validate(
        {
            "agent": {"data_dir": str(tmp_path)},
            "inputs": [{"type": "forward", "name": "in", "port": 0}],
            "outputs": [{"type": "stdout", "name": "console"}],
        }
    )
    reads = []

    def count_segment() -> int:
        reads.append(1)
        time.sleep(0.05)  # a segment read takes a while: the other pollers come meanwhile
        return 7

    journal.events_after = lambda position: (0, count_segment)
    app = SimpleNamespace(
        cfg=cfg,
        inputs=[],
        deliveries=[],
        journal=journal,
        paths=SimpleNamespace(delivery_snapshot=lambda g: tmp_path / "none.json", root=tmp_path),
        cursors=SimpleNamespace(load=lambda name: None),
        reloader=SimpleNamespace(stats=ReloadStats()),
    )
    monitor = Monitor(app, "127.0.0.1", 0)
    answers = await asyncio.gather(*(monitor.status() for _ in range(8)))
    assert len(reads) == 1 and all(a["outputs"][0]["backlog_events"] == 7 for a in answers)
    await asyncio.sleep(COUNT_CACHE_SECONDS + 0.05)
    await monitor.status()
    assert len(reads) == 2  # counted afresh once the second has passed
