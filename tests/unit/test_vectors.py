"""Real wire captures (Fluentd 1.18 and Fluent Bit 4.2.8 out_forward) against the codec.

Every captured client stream decodes to the captured events; given the
captured nonce and salts, the handshake code accepts the captured PING and
produces the captured PONG digest; the ack bytes are the captured ones.
"""

import json
from pathlib import Path

import pytest

from agent.protocol import forward as fwd
from tests.wire import entries_of

VECTORS = Path(__file__).parent.parent / "vectors"
FLUENTD = VECTORS / "fluentd-1.18-out_forward"
FLUENTBIT = VECTORS / "fluent-bit-4.2.8-out_forward"
NOW = 1_800_000_000_000_000_000


def _plain(value):
    """The capture JSON conventions → Python values as our decoder yields them."""
    if isinstance(value, dict):
        if "$EventTime" in value:
            sec, nsec = value["$EventTime"]
            return sec * 10**9 + nsec
        if "$bin_hex" in value:
            return bytes.fromhex(value["$bin_hex"])
        for k in ("$str_nonutf8_hex", "$str_non_utf8_hex"):
            if k in value:
                return bytes.fromhex(value[k])
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _ns(t):
    return t if t > 10**12 else t * 10**9


def decode_stream(data: bytes) -> list:
    return fwd.ForwardDecoder().feed(data, NOW)


# -- Fluent Bit ---------------------------------------------------------------

FB_MODES = sorted(p.stem for p in FLUENTBIT.glob("m*.json") if "mismatch" not in p.stem)


def _fb_expected(mode: str) -> dict[int, list]:
    """conn → [(tag, [(time_ns, record)], chunk)] from the decoded capture."""
    doc = json.loads((FLUENTBIT / f"{mode}.json").read_text())
    out: dict[int, list] = {}
    for m in doc["messages"]:
        if m["dir"] != "c2s" or m["kind"] in ("PING",):
            continue
        msg = _plain(m["msg"])
        tag = msg[0]
        if m["kind"] == "Message":
            events = [(_ns(msg[1]), msg[2])]
            opts = msg[3] if len(msg) > 3 else {}
        else:
            raw = _plain(m["entries"]) if "entries" in m else msg[1]
            events = []
            for t, rec in raw:
                if isinstance(t, list):
                    t = t[0]
                events.append((_ns(t), rec))
            opts = msg[2] if len(msg) > 2 else {}
        out.setdefault(m["conn"], []).append((tag, events, opts.get("chunk")))
    return out


@pytest.mark.parametrize("mode", FB_MODES)
def test_fluent_bit_streams_decode_to_the_captured_events(mode):
    expected = _fb_expected(mode)
    assert expected, "capture has client messages"
    for conn, messages in expected.items():
        frames = [
            f
            for f in decode_stream((FLUENTBIT / f"{mode}.conn{conn}.c2s.bin").read_bytes())
            if isinstance(f, fwd.EventBatch)
        ]
        assert len(frames) == len(messages)
        for frame, (tag, events, chunk) in zip(frames, messages):
            assert frame.tag == tag
            assert frame.skipped == []
            assert entries_of(frame) == events
            if chunk is not None:
                assert frame.chunk is not None and frame.chunk[1:].endswith(chunk.encode())


@pytest.mark.parametrize("mode", ["m04_require_ack", "m07_shared_key_ack_gzip"])
def test_fluent_bit_ack_bytes_match_the_capture(mode):
    for conn in (0, 1):
        frames = [
            f
            for f in decode_stream((FLUENTBIT / f"{mode}.conn{conn}.c2s.bin").read_bytes())
            if isinstance(f, fwd.EventBatch)
        ]
        s2c = (FLUENTBIT / f"{mode}.conn{conn}.s2c.bin").read_bytes()
        for frame in frames:
            assert fwd.ack_bytes(frame.chunk) in s2c


@pytest.mark.parametrize("mode", ["m06_shared_key", "m07_shared_key_ack_gzip"])
def test_fluent_bit_handshake_digest_matches_the_capture(mode):
    doc = json.loads((FLUENTBIT / f"{mode}.json").read_text())
    msgs = [m for m in doc["messages"] if m["conn"] == 0]
    helo = _plain(next(m for m in msgs if m["kind"] == "HELO")["msg"])
    nonce = helo[1]["nonce"]
    [ping] = [f for f in decode_stream((FLUENTBIT / f"{mode}.conn0.c2s.bin").read_bytes()) if isinstance(f, fwd.Ping)]
    captured_pong = _plain(next(m for m in msgs if m["kind"] == "PONG")["msg"])
    ok, reason, pong = fwd.check_ping(
        ping, nonce=nonce, auth_salt=b"", shared_key=b"secret", self_hostname=captured_pong[3].encode()
    )
    assert ok, reason
    import msgpack

    assert msgpack.unpackb(pong) == captured_pong


def test_fluent_bit_wrong_key_is_refused():
    doc = json.loads((FLUENTBIT / "m11_shared_key_mismatch.json").read_text())
    helo = _plain(next(m for m in doc["messages"] if m["conn"] == 0 and m["kind"] == "HELO")["msg"])
    [ping] = [
        f
        for f in decode_stream((FLUENTBIT / "m11_shared_key_mismatch.conn0.c2s.bin").read_bytes())
        if isinstance(f, fwd.Ping)
    ]
    ok, reason, pong = fwd.check_ping(
        ping, nonce=helo[1]["nonce"], auth_salt=b"", shared_key=b"secret", self_hostname=b"capture-server"
    )
    assert not ok and reason == "shared_key mismatch"


# -- Fluentd ------------------------------------------------------------------

SESSIONS = sorted(FLUENTD.glob("session-*.json"))


@pytest.mark.parametrize("session", SESSIONS, ids=lambda p: p.stem)
def test_fluentd_session_decodes_and_handshake_and_ack_match(session):
    doc = json.loads(session.read_text())
    msgs = {m["kind"]: m for m in doc["messages"]}
    frames = decode_stream(bytes.fromhex(doc["c2s_hex"]))
    ping, batch = frames[0], frames[1]
    assert isinstance(ping, fwd.Ping) and isinstance(batch, fwd.EventBatch)
    # str32 payload (gzip'd or not) decodes to the captured entries.
    expected = [(_ns(_plain(t)), rec) for t, rec in msgs["PackedForward"]["entries"]]
    assert entries_of(batch) == expected
    assert batch.tag == msgs["PackedForward"]["decoded"][0]
    # The handshake with the captured nonce and auth salt: the captured PONG, byte for byte.
    helo = _plain(msgs["HELO"]["decoded"])
    assert fwd.helo(helo[1]["nonce"], helo[1]["auth"]) == bytes.fromhex(msgs["HELO"]["raw_hex"])
    ok, reason, pong = fwd.check_ping(
        ping,
        nonce=helo[1]["nonce"],
        auth_salt=helo[1]["auth"],
        shared_key=doc["shared_key"].encode(),
        self_hostname=doc["server_hostname"].encode(),
        users={b"": b""},
    )
    assert ok, reason
    assert pong == bytes.fromhex(msgs["PONG"]["raw_hex"])
    # The ack echoes Fluentd's chunk (base64 ending in "\n") byte for byte.
    assert fwd.ack_bytes(batch.chunk) == bytes.fromhex(msgs["ACK"]["raw_hex"])


def test_fluentd_raw_connections_decode_whole_and_bytewise():
    for raw in sorted(FLUENTD.glob("raw*/conn-*.c2s.bin")):
        data = raw.read_bytes()
        whole = decode_stream(data)
        d = fwd.ForwardDecoder()
        bytewise = []
        for i in range(0, len(data)):
            bytewise += d.feed(data[i : i + 1], NOW)
        assert [type(f) for f in whole] == [type(f) for f in bytewise]
        batches = [f for f in whole if isinstance(f, fwd.EventBatch)]
        assert batches and all(b.count > 0 and not b.skipped for b in batches)
        assert [entries_of(b) for b in batches] == [entries_of(b) for b in bytewise if isinstance(b, fwd.EventBatch)]
