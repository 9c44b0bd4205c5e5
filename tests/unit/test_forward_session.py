"""The Forward session without I/O: the recorded client streams fed whole, byte by byte and with
bytes after them; the handshake with the captured nonce; acks in frame order."""

from __future__ import annotations

import json

import msgpack
import pytest

from agent.protocol import forward as fwd
from agent.protocol.forward import session as proto
from tests.unit.test_vectors import FLUENTBIT, FLUENTD, _plain

LIMITS = {"max_frame_size": 16 << 20, "max_decompressed_size": 64 << 20}


def session(**options) -> proto.ServerSession:
    return proto.ServerSession(**LIMITS, **options)


def feed(s: proto.ServerSession, data: bytes, step: int | None) -> list[proto.Event]:
    if step is None:
        return s.receive(data)
    events: list[proto.Event] = []
    for i in range(0, len(data), step):
        events += s.receive(data[i : i + step])
    return events


def frames_of(events: list[proto.Event]) -> list[bytes]:
    return [e.data for e in events if isinstance(e, proto.FrameReady)]


FB_STREAMS = sorted(p for p in FLUENTBIT.glob("m*.conn*.c2s.bin") if "shared_key" not in p.name)


@pytest.mark.parametrize("stream", FB_STREAMS, ids=lambda p: p.name)
@pytest.mark.parametrize("step", [None, 1, 7])
def test_a_recorded_stream_gives_the_same_frames_whole_and_in_pieces(stream, step):
    data = stream.read_bytes()
    whole = frames_of(session().receive(data))
    pieces = feed(session(), data, step)
    assert frames_of(pieces) == whole and whole
    assert not any(isinstance(e, proto.Close) for e in pieces)
    assert b"".join(whole) == data  # every byte in exactly one frame
    parsed = [fwd.parse_frame(f, 0) for f in whole]
    assert all(isinstance(p, fwd.EventBatch) and p.count for p in parsed)


def test_bytes_after_the_last_frame_are_held_until_their_frame_completes():
    data = (FLUENTBIT / "m04_require_ack.conn0.c2s.bin").read_bytes()
    s = session()
    first = frames_of(s.receive(data + data[:10]))
    assert s.buffered == 10
    assert frames_of(s.receive(data[10:])) == first
    assert s.buffered == 0


def handshake_capture(mode: str) -> tuple[dict, bytes]:
    doc = json.loads((FLUENTBIT / f"{mode}.json").read_text())
    helo = _plain(next(m for m in doc["messages"] if m["conn"] == 0 and m["kind"] == "HELO")["msg"])
    return helo[1], (FLUENTBIT / f"{mode}.conn0.c2s.bin").read_bytes()


@pytest.mark.parametrize("step", [None, 1, 13])
def test_the_recorded_handshake_is_accepted_and_the_frames_after_it_follow(step):
    helo, data = handshake_capture("m07_shared_key_ack_gzip")
    s = session(shared_key=b"secret", self_hostname=b"capture-server")
    [hello] = s.start(helo["nonce"], helo["auth"])
    assert isinstance(hello, proto.Send) and msgpack.unpackb(hello.data)[0] == "HELO"
    events = feed(s, data, step)
    kinds = [type(e) for e in events]
    assert kinds[:2] == [proto.Send, proto.Authenticated]
    assert msgpack.unpackb(events[0].data)[:2] == ["PONG", True]
    assert s.authenticated and frames_of(events)
    assert all(isinstance(fwd.parse_frame(f, 0), fwd.EventBatch) for f in frames_of(events))


def test_a_wrong_key_gets_a_pong_false_and_a_close_after_it():
    helo, data = handshake_capture("m11_shared_key_mismatch")
    s = session(shared_key=b"secret", self_hostname=b"capture-server")
    s.start(helo["nonce"], helo["auth"])
    pong, failed, close = s.receive(data)
    assert msgpack.unpackb(pong.data)[:3] == ["PONG", False, "shared_key mismatch"]
    assert isinstance(failed, proto.AuthFailed) and not failed.throttled
    assert isinstance(close, proto.Close) and close.graceful and close.kind == "auth"
    assert s.receive(data) == []  # nothing after a close


def test_a_throttled_host_is_refused_unchecked():
    helo, data = handshake_capture("m06_shared_key")
    s = session(shared_key=b"secret", self_hostname=b"capture-server", throttled_for=lambda: 2.0)
    s.start(helo["nonce"], helo["auth"])
    events = s.receive(data)
    assert [type(e) for e in events] == [proto.Send, proto.AuthFailed, proto.Close]
    assert events[1].throttled and not s.authenticated


@pytest.mark.parametrize(
    "first_bytes",
    [b"\x93\xa1t\x90", b"\xc0", b"\x96\xa4PONG"],
    ids=["events", "heartbeat", "not a ping"],
)
def test_before_the_handshake_anything_but_a_ping_closes_at_its_first_byte(first_bytes):
    s = session(shared_key=b"k", self_hostname=b"agent")
    s.start(b"n" * 16, b"s" * 16)
    [close] = s.receive(first_bytes)
    assert isinstance(close, proto.Close) and close.kind == "protocol" and not close.graceful


def test_a_ping_that_never_ends_is_bounded():
    s = session(shared_key=b"k", self_hostname=b"agent")
    s.start(b"n" * 16, b"s" * 16)
    head = b"\x96\xa4PING\xdb\x00\x10\x00\x00"  # a str32 of 1 MiB as the hostname
    assert s.receive(head) == []
    events = s.receive(b"x" * proto.PREAUTH_LIMIT)
    assert isinstance(events[-1], proto.Close) and "larger than" in events[-1].reason


def test_a_ping_after_the_handshake_and_heartbeats():
    s = session()
    events = s.receive(b"\xc0" + msgpack.packb(["PING", "h", b"", b"", b"", b""]))
    assert isinstance(events[0], proto.HeartbeatSeen)
    assert isinstance(events[-1], proto.Close) and "unexpected PING" in events[-1].reason


def test_acks_go_in_frame_order_whichever_is_durable_first():
    s = session()
    first, second, third = s.expect_ack(b"\xa1a"), s.expect_ack(None), s.expect_ack(b"\xa1c")
    assert s.settle(third) == []  # behind the others
    assert s.settle(second) == []
    [ack_a, ack_c] = s.settle(first)
    assert (ack_a.data, ack_c.data) == (fwd.ack_bytes(b"\xa1a"), fwd.ack_bytes(b"\xa1c"))
    assert ack_a.ack and s.in_flight == 0


def test_a_failed_write_closes_and_nothing_after_it_is_acked():
    s = session()
    first, second = s.expect_ack(b"\xa1a"), s.expect_ack(b"\xa1b")
    assert s.settle(second) == []
    [close] = s.settle(first, "No space left on device")
    assert isinstance(close, proto.Close) and close.kind == "write"


def test_the_fluentd_sessions_handshake_and_frames():
    for path in sorted(FLUENTD.glob("session-*.json")):
        doc = json.loads(path.read_text())
        msgs = {m["kind"]: m for m in doc["messages"]}
        helo = _plain(msgs["HELO"]["decoded"])
        s = session(
            shared_key=doc["shared_key"].encode(), self_hostname=doc["server_hostname"].encode(), users={b"": b""}
        )
        [hello] = s.start(helo[1]["nonce"], helo[1]["auth"])
        assert hello.data == bytes.fromhex(msgs["HELO"]["raw_hex"])
        events = feed(s, bytes.fromhex(doc["c2s_hex"]), 5)
        assert events[0].data == bytes.fromhex(msgs["PONG"]["raw_hex"])
        [frame] = frames_of(events)
        batch = fwd.parse_frame(frame, 0)
        number = s.expect_ack(batch.chunk)
        [ack] = s.settle(number)
        assert ack.data == bytes.fromhex(msgs["ACK"]["raw_hex"])
