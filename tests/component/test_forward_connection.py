"""The Forward connection handler in-process: acks after durability, in order; backpressure;
the handshake; one bad frame closes one connection."""

from __future__ import annotations

import asyncio
import logging

import msgpack

from agent.inputs.forward import ForwardConnection, ForwardInput, ForwardInputConfig
from agent.journal.batch import decode_entries
from agent.journal.reader import JournalReader
from tests.component.conftest import FakeTransport
from tests.wire import event_time, pack


def chunk(tag: str, records: list[dict], name: str) -> bytes:
    entries = b"".join(pack([event_time(1_700_000_000, i), r]) for i, r in enumerate(records))
    return pack([tag, entries, {"chunk": name}])


def connect(server: ForwardInput) -> tuple[ForwardConnection, FakeTransport]:
    conn = ForwardConnection(server)
    transport = FakeTransport()
    conn.connection_made(transport)
    return conn, transport


def acks(transport: FakeTransport) -> list:
    return list(msgpack.Unpacker(__import__("io").BytesIO(bytes(transport.written)), raw=False))


async def until(condition, timeout: float = 10.0) -> None:
    """Let the loop run (the journal's group commit and fsync, then the ack callbacks) until it holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


async def test_acks_wait_for_the_journal_and_keep_the_frames_order(ingest, journal):
    server = ForwardInput(ForwardInputConfig.validate(dict(type="forward", port=0)), ingest)
    conn, transport = connect(server)
    conn.data_received(chunk("t", [{"i": 1}], "a") + chunk("t", [{"i": 2}, {"i": 3}], "b"))
    assert acks(transport) == []  # nothing is durable before the writer ran
    await until(lambda: len(acks(transport)) == 2)
    assert acks(transport) == [{"ack": "a"}, {"ack": "b"}]
    reader = JournalReader(journal.directory)
    journaled = [r for rec in reader.read() for _, r in decode_entries(rec.payload)[1]]
    reader.close()
    assert journaled == [{"i": 1}, {"i": 2}, {"i": 3}]
    assert server.received() == (3, len(chunk("t", [{"i": 1}], "a") + chunk("t", [{"i": 2}, {"i": 3}], "b")))


async def test_too_many_frames_in_flight_stop_reading_until_they_are_acked(ingest):
    server = ForwardInput(ForwardInputConfig.validate(dict(type="forward", port=0, max_inflight_frames=2)), ingest)
    conn, transport = connect(server)
    conn.data_received(b"".join(chunk("t", [{"i": k}], f"c{k}") for k in range(3)))
    assert not transport.reading
    await until(lambda: len(acks(transport)) == 3)
    assert transport.reading and [a["ack"] for a in acks(transport)] == ["c0", "c1", "c2"]


async def test_a_frame_that_is_not_msgpack_closes_its_connection_with_one_line(ingest, caplog):
    server = ForwardInput(ForwardInputConfig.validate(dict(type="forward", port=0)), ingest)
    good, good_transport = connect(server)
    bad, bad_transport = connect(server)
    with caplog.at_level(logging.ERROR, logger="agent.input.forward"):
        bad.data_received(b"\xc1")
        good.data_received(chunk("t", [{"ok": True}], "g"))
    await until(lambda: acks(good_transport) != [])
    assert bad_transport.closed and not good_transport.closed
    assert acks(good_transport) == [{"ack": "g"}]
    [line] = [r.getMessage() for r in caplog.records]
    assert "peer 127.0.0.1:50000" in line and "closing connection" in line
    assert server.stats.protocol_errors == 1


async def test_with_a_shared_key_events_before_the_ping_close_the_connection(ingest):
    cfg = ForwardInputConfig.validate(dict(type="forward", port=0, shared_key="k", self_hostname="agent"))
    server = ForwardInput(cfg, ingest)
    conn, transport = connect(server)
    [helo] = acks(transport)
    assert helo[0] == "HELO" and set(helo[1]) == {"nonce", "auth", "keepalive"}
    conn.data_received(chunk("t", [{"i": 1}], "early"))
    assert transport.closed and acks(transport) == [helo]  # no ack for what came before the handshake


async def test_records_whose_keys_are_not_strings_are_skipped_and_the_frame_acked(ingest):
    server = ForwardInput(ForwardInputConfig.validate(dict(type="forward", port=0)), ingest)
    conn, transport = connect(server)
    entries = pack([event_time(1_700_000_000), {"ok": 1}]) + b"\x92" + pack(event_time(1_700_000_000)) + b"\x81\x01\x02"
    conn.data_received(pack(["t", entries, {"chunk": "k"}]))
    await until(lambda: acks(transport) != [])
    assert acks(transport) == [{"ack": "k"}]
    assert server.stats.skipped_records == 1 and server.received()[0] == 1


async def test_a_closed_journal_and_a_filter_bug_are_told_apart(ingest, journal, tmp_path):
    """A closed journal refuses the frame, unacked, with JournalClosed; a filter raising
    RuntimeError is a bug and surfaces as one, not as "journal closed"."""
    import pytest

    from agent.deadletter import DeadLetterStore
    from agent.errors import JournalClosed
    from agent.ingest import Ingest

    class Buggy:
        def apply_batch(self, *args):
            raise RuntimeError("a filter bug")

    buggy = Ingest(journal, [("**", Buggy())], DeadLetterStore(tmp_path / "dl"))  # type: ignore[list-item]
    with pytest.raises(RuntimeError, match="a filter bug") as raised:
        buggy.submit("t", pack([event_time(1_700_000_000), {"a": 1}]), 1)
    assert not isinstance(raised.value, JournalClosed)
    buggy.close()
    await journal.close()
    with pytest.raises(JournalClosed):
        ingest.submit("t", pack([event_time(1_700_000_000), {"a": 1}]), 1)
    server = ForwardInput(ForwardInputConfig.validate(dict(type="forward", port=0)), ingest)
    conn, transport = connect(server)
    conn.data_received(chunk("t", [{"i": 1}], "a"))
    assert transport.closed and acks(transport) == []  # refused, never acked
