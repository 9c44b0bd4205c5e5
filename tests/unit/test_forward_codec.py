"""The Forward protocol codec: every mode and time form, fed three ways, and every malformed case."""

import gzip
import struct

import msgpack
import pytest
import zstandard
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agent.errors import ProtocolError
from agent.protocol import forward as fwd
from tests.wire import entries_of, event_time, pack

NOW = 1_800_000_000_123_456_789
T = 1_700_000_000
REC = {"product_id": "sg.gem_pack_500", "price": 4.99, "n": 3}
REC2 = {"product_id": "sg.vip", "price": 19.99, "n": 1, "nested": {"a": [1, 2]}}


def feed_whole(data):
    return fwd.ForwardDecoder().feed(data, NOW)


def feed_bytewise(data):
    d = fwd.ForwardDecoder()
    frames = []
    for i in range(len(data)):
        frames += d.feed(data[i : i + 1], NOW)
    assert d.buffered == 0
    return frames


def feed_with_trailing(data):
    """The frame followed by the first bytes of another one: those are held back."""
    d = fwd.ForwardDecoder()
    trailing = pack(["next.tag", [[T, {"a": 1}]]])[:7]
    frames = d.feed(data + trailing, NOW)
    assert d.buffered == len(trailing)
    return frames


FEEDERS = [feed_whole, feed_bytewise, feed_with_trailing]


def one_batch(frames) -> fwd.EventBatch:
    assert len(frames) == 1, frames
    assert isinstance(frames[0], fwd.EventBatch)
    return frames[0]


def packed(*entries) -> bytes:
    return b"".join(pack(e) for e in entries)


MODES = {
    "message_eventtime": (pack(["t.a", event_time(T, 123456789), REC]), [(T * 10**9 + 123456789, REC)]),
    "message_int": (pack(["t.a", T, REC]), [(T * 10**9, REC)]),
    "message_float": (pack(["t.a", T + 0.5, REC]), [(T * 10**9 + 500_000_000, REC)]),
    "message_zero_is_now": (pack(["t.a", 0, REC]), [(NOW, REC)]),
    "message_nil_is_now": (pack(["t.a", None, REC]), [(NOW, REC)]),
    "message_with_option": (pack(["t.a", T, REC, {"fluent_signal": 0}]), [(T * 10**9, REC)]),
    "forward": (pack(["t.a", [[event_time(T, 1), REC], [T, REC2]]]), [(T * 10**9 + 1, REC), (T * 10**9, REC2)]),
    "forward_metadata": (
        pack(["t.a", [[[event_time(T, 5), {"k": 1}], REC], [[T, {}], REC2]], {"fluent_signal": 0}]),
        [(T * 10**9 + 5, REC), (T * 10**9, REC2)],
    ),
    "packed_bin": (
        pack(["t.a", packed([event_time(T, 7), REC], [T, REC2]), {"size": 2}]),
        [(T * 10**9 + 7, REC), (T * 10**9, REC2)],
    ),
    "packed_str": (
        b"\x93"
        + pack("t.a")
        + b"\xdb"
        + struct.pack(">I", len(packed([event_time(T, 7), REC])))
        + packed([event_time(T, 7), REC])
        + pack({"compressed": "text"}),
        [(T * 10**9 + 7, REC)],
    ),
    "gzip": (
        pack(
            [
                "t.a",
                gzip.compress(packed([event_time(T, 9), REC], [event_time(T, 10), REC2])),
                {"compressed": "gzip", "size": 2},
            ]
        ),
        [(T * 10**9 + 9, REC), (T * 10**9 + 10, REC2)],
    ),
    "gzip_two_members": (
        pack(
            [
                "t.a",
                gzip.compress(packed([event_time(T, 1), REC])) + gzip.compress(packed([event_time(T, 2), REC2])),
                {"compressed": "gzip"},
            ]
        ),
        [(T * 10**9 + 1, REC), (T * 10**9 + 2, REC2)],
    ),
    "zstd": (
        pack(["t.a", zstandard.ZstdCompressor().compress(packed([event_time(T, 3), REC])), {"compressed": "zstd"}]),
        [(T * 10**9 + 3, REC)],
    ),
    "ext8_eventtime": (
        pack(["t.a", [[T, REC]]]).replace(b"\xce" + struct.pack(">I", T), b"\xc7\x08\x00" + struct.pack(">II", T, 42)),
        [(T * 10**9 + 42, REC)],
    ),
}


@pytest.mark.parametrize("feeder", FEEDERS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_and_time_form_decodes_to_the_sent_events(mode, feeder):
    data, expected = MODES[mode]
    batch = one_batch(feeder(data))
    assert batch.tag == "t.a"
    assert entries_of(batch) == expected
    assert batch.skipped == []


def test_modes_are_told_apart():
    assert feed_whole(MODES["message_int"][0])[0].mode == "message"
    assert feed_whole(MODES["forward"][0])[0].mode == "forward"
    assert feed_whole(MODES["packed_bin"][0])[0].mode == "packed_forward"
    assert feed_whole(MODES["gzip"][0])[0].mode == "compressed_packed_forward"


def test_chunk_is_echoed_byte_for_byte_and_absent_chunk_gets_no_ack():
    chunk = "Zg1NSndpSnHv1bJH217tXg==\n"
    batch = one_batch(feed_whole(pack(["t", [[T, REC]], {"chunk": chunk, "size": 1}])))
    assert fwd.ack_bytes(batch.chunk) == pack({"ack": chunk})
    assert one_batch(feed_whole(pack(["t", [[T, REC]]]))).chunk is None
    # A chunk sent as str8 (non-minimal) comes back as str8, not re-encoded.
    raw = b"\xd9\x03abc"
    frame = b"\x93" + pack("t") + pack([[T, REC]]) + b"\x81" + pack("chunk") + raw
    assert fwd.ack_bytes(one_batch(feed_whole(frame)).chunk) == b"\x81\xa3ack" + raw


def test_a_chunk_id_longer_than_any_client_makes_is_a_protocol_error():
    from agent.protocol.forward.decoder import MAX_CHUNK_ID_BYTES

    uuid = "8c4d2f0e-5b1a-4b7e-9c3d-2a6f1e0b7d94"
    assert one_batch(feed_whole(pack(["t", [[T, REC]], {"chunk": uuid}]))).chunk == pack(uuid)
    with pytest.raises(ProtocolError, match="chunk id"):
        feed_whole(pack(["t", [[T, REC]], {"chunk": "c" * MAX_CHUNK_ID_BYTES}]))
    with pytest.raises(ProtocolError, match="chunk id"):
        feed_whole(pack(["t", [[T, REC]], {"chunk": b"\0" * (1 << 20)}]))  # 1 MiB: every ack as large


def test_several_frames_in_one_read_and_heartbeats():
    data = b"\xc0" + MODES["forward"][0] + b"\xc0" + MODES["message_int"][0]
    frames = feed_whole(data)
    assert [type(f).__name__ for f in frames] == ["Heartbeat", "EventBatch", "Heartbeat", "EventBatch"]


def test_non_minimal_headers_are_accepted():
    # Fluent Bit writes array32 headers for entries: dd 00 00 00 02.
    entry = b"\xdd\x00\x00\x00\x02" + pack(event_time(T, 1)) + b"\xdf\x00\x00\x00\x01" + pack("k") + pack("v")
    frame = b"\x92" + pack("t") + b"\xdd\x00\x00\x00\x01" + entry
    batch = one_batch(feed_whole(frame))
    assert entries_of(batch) == [(T * 10**9 + 1, {"k": "v"})]


def test_fluent_signal_is_reported():
    batch = one_batch(feed_whole(pack(["t", [[T, REC]], {"fluent_signal": 2}])))
    assert batch.signal == 2


# -- invalid entries inside a valid message: skipped, counted, the rest kept --


def test_invalid_entries_are_skipped_and_the_rest_kept():
    frame = pack(
        [
            "t",
            [
                [T, REC],
                "not an entry",
                [T],
                [T, "not a map"],
                ["bad time", REC],
                [-5, REC],
                [event_time(T, 1), REC2],
                [T, REC, "extra"],
            ],
        ]
    )
    batch = one_batch(feed_whole(frame))
    assert entries_of(batch) == [(T * 10**9, REC), (T * 10**9 + 1, REC2), (T * 10**9, REC)]
    assert len(batch.skipped) == 5
    assert "not [time, record]" in batch.skipped[0]
    assert "not a map" in batch.skipped[2]
    assert "time is" in batch.skipped[3]


def test_invalid_message_mode_record_is_skipped_but_the_frame_stands():
    batch = one_batch(feed_whole(pack(["t", T, "not a map", {"chunk": "c1"}])))
    assert batch.count == 0 and len(batch.skipped) == 1 and batch.chunk == pack("c1")


def test_garbage_inside_a_packed_payload_drops_the_rest_of_that_payload_only():
    payload = packed([T, REC]) + b"\xc1\xc1\xc1" + packed([T, REC2])
    batch = one_batch(feed_whole(pack(["t", payload, {"chunk": "x"}])))
    assert entries_of(batch) == [(T * 10**9, REC)]
    assert "not msgpack" in batch.skipped[0]


def test_truncated_packed_payload_keeps_the_whole_entries():
    payload = packed([T, REC], [T, REC2])
    batch = one_batch(feed_whole(pack(["t", payload[:-3]])))
    assert entries_of(batch) == [(T * 10**9, REC)]
    assert "truncated" in batch.skipped[0]


# -- fatal errors: the connection is closed --------------------------------


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"\xc1garbage", "invalid msgpack"),
        (pack("just a string"), "not an array"),
        (pack(42), "not an array"),
        (pack({"a": 1}), "not an array"),
        (pack([1, [[T, REC]]]), "tag is an integer"),
        (pack(["t"]), "1 elements"),
        (pack(["t", [[T, REC]], {}, 1, 2]), "5 elements"),
        (pack(["t", [[T, REC]], "option is not a map"]), "option is a string"),
        (pack(["t", b"\x1f\x8b\x08\x00garbage", {"compressed": "gzip"}]), "gzip"),
        (pack(["t", b"data", {"compressed": "lz4"}]), "unsupported compression"),
        (pack(["", [[T, REC]]]), "tag is empty"),
    ],
)
def test_malformed_input_is_a_fatal_protocol_error(data, reason):
    with pytest.raises(ProtocolError) as err:
        feed_whole(data)
    assert reason in err.value.reason
    assert err.value.fatal


def test_an_incomplete_frame_waits_for_more_bytes():
    data = MODES["forward"][0]
    d = fwd.ForwardDecoder()
    assert d.feed(data[:-1], NOW) == []
    assert d.buffered == len(data) - 1
    assert len(d.feed(data[-1:], NOW)) == 1


def test_an_oversized_partial_frame_is_fatal():
    d = fwd.ForwardDecoder(max_frame_size=1024)
    big = pack(["t", [[T, {"x": "y" * 5000}]]])
    with pytest.raises(ProtocolError, match="max_frame_size"):
        d.feed(big[:2000], NOW)


def test_a_whole_frame_over_the_limit_is_fatal_too():
    big = pack(["t", [[T, {"x": "y" * 900}]]])
    with pytest.raises(ProtocolError, match="larger than max_frame_size"):
        fwd.ForwardDecoder(max_frame_size=len(big) - 1).feed(big, NOW)


def test_a_frame_at_the_limit_passes():
    big = pack(["t", [[T, {"x": "y" * 900}]]])
    d = fwd.ForwardDecoder(max_frame_size=len(big))
    assert len(d.feed(big, NOW)) == 1


@pytest.mark.parametrize("method", ["gzip", "zstd"])
def test_a_decompression_bomb_is_fatal(method):
    inner = packed(*[[T, {"pad": "0" * 1000}] for _ in range(2000)])  # 2 MB of entries
    comp = gzip.compress(inner) if method == "gzip" else zstandard.ZstdCompressor().compress(inner)
    assert len(comp) < 50_000
    d = fwd.ForwardDecoder(max_decompressed_size=1_000_000)
    with pytest.raises(ProtocolError, match="exceeds"):
        d.feed(pack(["t", comp, {"compressed": method}]), NOW)


# -- handshake ---------------------------------------------------------------


def test_handshake_accepts_the_right_key_and_rejects_the_wrong_one():
    nonce, auth = b"n" * 16, b"a" * 16
    salt = b"s" * 16
    ok_ping = fwd.Ping(b"client", salt, fwd.shared_key_digest(salt, b"client", nonce, b"k"), b"", b"")
    ok, reason, pong = fwd.check_ping(ok_ping, nonce=nonce, auth_salt=auth, shared_key=b"k", self_hostname=b"srv")
    assert ok and msgpack.unpackb(pong) == [
        "PONG",
        True,
        "",
        "srv",
        fwd.shared_key_digest(salt, b"srv", nonce, b"k").decode(),
    ]
    ok, reason, pong = fwd.check_ping(ok_ping, nonce=nonce, auth_salt=auth, shared_key=b"other", self_hostname=b"srv")
    assert not ok and msgpack.unpackb(pong) == ["PONG", False, "shared_key mismatch", "", ""]


def test_handshake_checks_users():
    nonce, auth, salt = b"n" * 16, b"a" * 16, b"s" * 16
    digest = fwd.shared_key_digest(salt, b"c", nonce, b"k")
    users = {b"alice": b"pw"}
    good = fwd.Ping(b"c", salt, digest, b"alice", fwd.password_digest(auth, b"alice", b"pw"))
    bad = fwd.Ping(b"c", salt, digest, b"alice", fwd.password_digest(auth, b"alice", b"nope"))
    unknown = fwd.Ping(b"c", salt, digest, b"bob", fwd.password_digest(auth, b"bob", b"pw"))
    kw = dict(nonce=nonce, auth_salt=auth, shared_key=b"k", self_hostname=b"srv", users=users)
    assert fwd.check_ping(good, **kw)[0]
    assert fwd.check_ping(bad, **kw)[1] == "username/password mismatch"
    assert fwd.check_ping(unknown, **kw)[1] == "username/password mismatch"


def test_ping_is_decoded_as_a_ping_frame():
    frame = pack(["PING", "host", b"salt", "digest", "", ""])
    [ping] = feed_whole(frame)
    assert ping == fwd.Ping(b"host", b"salt", b"digest", b"", b"")


# -- round trips ------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
records = st.dictionaries(st.text(max_size=12), json_values, max_size=8)
times = st.tuples(st.integers(1, 2**32 - 1), st.integers(0, 999_999_999))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(times, records), min_size=1, max_size=20),
    st.sampled_from(["forward", "packed", "gzip", "message"]),
)
def test_round_trip_of_any_records_in_any_mode(events, mode):
    entries = [[event_time(s, ns), rec] for (s, ns), rec in events]
    if mode == "forward":
        data = pack(["tag.x", entries, {"chunk": "abc"}])
    elif mode == "packed":
        data = pack(["tag.x", packed(*entries), {"chunk": "abc"}])
    elif mode == "gzip":
        data = pack(["tag.x", gzip.compress(packed(*entries)), {"chunk": "abc", "compressed": "gzip"}])
    else:
        entries = entries[:1]
        events = events[:1]
        data = pack(["tag.x", entries[0][0], entries[0][1], {"chunk": "abc"}])
    for feeder in FEEDERS if len(data) < 3000 else FEEDERS[::2]:
        batch = one_batch(feeder(data))
        assert entries_of(batch) == [(s * 10**9 + ns, rec) for (s, ns), rec in events]
        assert batch.chunk == pack("abc")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_but_a_protocol_error(data):
    d = fwd.ForwardDecoder(max_frame_size=4096)
    try:
        for frame in d.feed(data, NOW):
            if isinstance(frame, fwd.EventBatch):
                entries_of(frame)
    except ProtocolError:
        pass


# -- hostile bytes: a ProtocolError or frames, never anything else -------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _real_frames() -> list[bytes]:
    """Every frame real Fluentd and Fluent Bit senders wrote in the recorded sessions."""
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "vectors"
    streams = [p.read_bytes() for p in sorted(root.rglob("*.c2s.bin"))]
    for path in sorted(root.glob("fluentd-*/*.json")):
        doc = json.loads(path.read_text())
        if isinstance(doc.get("c2s_hex"), str):
            streams.append(bytes.fromhex(doc["c2s_hex"]))
    frames = []
    for stream in streams:
        unpacker = msgpack.Unpacker(raw=True, max_buffer_size=len(stream) + 1024)
        unpacker.feed(stream)
        start = 0
        while True:
            try:
                unpacker.skip()
            except msgpack.OutOfData:
                break
            frames.append(stream[start : unpacker.tell()])
            start = unpacker.tell()
    frames.append(pack(["t", [[T, {"a": 1}]], {"chunk": "c", "size": 1}]))
    return frames


FRAMES = _real_frames()


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(FRAMES),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
    st.integers(0, 10_000),
)
def test_mutated_real_frames_give_frames_or_a_protocol_error_and_nothing_else(frame, flips, cut):
    data = bytearray(frame)
    for at, value in flips:
        if data:
            data[at % len(data)] = value
    data = bytes(data[: max(1, cut % (len(data) + 1))])
    d = fwd.ForwardDecoder(max_frame_size=1 << 20, max_decompressed_size=1 << 20)
    try:
        d.feed(data, NOW)
    except ProtocolError:
        pass


def test_an_array_as_an_option_key_is_a_protocol_error():
    frame = b"\x93\xa1t" + pack([[T, {"a": 1}]]) + b"\x81\xa1x\x81\x91\x01\x01"  # options {"x": {[1]: 1}}
    with pytest.raises(ProtocolError, match="invalid message"):
        fwd.ForwardDecoder().feed(frame, NOW)


def test_millions_of_invalid_entries_cost_no_memory_per_entry_and_end_the_connection():
    import tracemalloc

    junk = b"\x00" * (2 << 20)  # two million entries, each a positive fixint, none [time, record]
    tracemalloc.start()
    with pytest.raises(ProtocolError, match="more than 10000 invalid entries"):
        fwd.ForwardDecoder(max_decompressed_size=8 << 20).feed(pack(["t", junk, {"chunk": "c"}]), NOW)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 32 << 20, peak  # copies of the 2 MB payload; a reason per entry was about 150 MB
    few = pack(["t", b"\x00" * 20 + pack([T, {"a": 1}]), {"chunk": "c"}])
    [batch] = fwd.ForwardDecoder().feed(few, NOW)
    assert batch.count == 1 and len(batch.skipped) == 20 and len(batch.skipped.reasons) == 10


def test_nesting_past_msgpacks_own_limit_is_a_skipped_entry_and_the_frame_stands():
    deep = b"\x92" + pack(T) + b"\x81\xa1k" * 2000 + b"\xc0"  # 2,000 levels; msgpack stops at 1,024
    [batch] = fwd.ForwardDecoder().feed(pack(["t", pack([T, {"ok": 1}]) + deep, {"chunk": "c"}]), NOW)
    assert batch.count == 1 and len(batch.skipped) == 1 and "not msgpack" in batch.skipped[0]


@pytest.mark.parametrize("mode", ["forward", "packed_forward", "message"])
def test_a_record_whose_own_keys_are_not_all_strings_is_a_skipped_entry(mode):
    # Found by fuzzing: {[1]: "x"} was acknowledged, then no output could write it.
    bad_records = [b"\x82\xa1a\x01\x91\x01\xa1x", b"\x81\x01\x02", b"\x81\xc4\x01k\x02", b"\x81\xc0\x02"]
    nested_ok = b"\x81\xa1n\x81\x01\x02"  # {"n": {1: 2}}: inside a record any key goes; JSON renders it
    for bad in bad_records:
        records = [b"\x81\xa1a\x01", bad, nested_ok, b"\x81\xa2\xff\xfe\x01"]  # the last: a non-UTF-8 key
        entries = [b"\x92" + pack(event_time(T)) + r for r in records]
        if mode == "forward":
            frame = b"\x93\xa1t\x94" + b"".join(entries) + pack({"chunk": "c"})
        elif mode == "packed_forward":
            frame = b"\x93\xa1t" + pack(b"".join(entries)) + pack({"chunk": "c"})
        else:
            frame = b"\x94\xa1t" + pack(event_time(T)) + bad + pack({"chunk": "c"})
        batch = one_batch(feed_whole(frame))
        assert len(batch.skipped) == 1 and "not a string" in batch.skipped[0]
        if mode != "message":
            assert batch.count == 3 and batch.entries == entries[0] + entries[2] + entries[3]


def test_keys_of_a_frame_of_many_entries_are_checked_slice_by_slice():
    good = b"\x92" + pack(event_time(T)) + b"\x81\xa1a\x01"
    bad = b"\x92" + pack(event_time(T)) + b"\x81\x01\x02"
    entries = good * 5000 + bad + good * 5000 + bad + good * 10
    batch = one_batch(feed_whole(pack(["t", entries, {"chunk": "c"}])))
    assert batch.count == 10_010 and batch.entries == good * 10_010
    assert len(batch.skipped) == 2 and all("not a string" in r for r in batch.skipped.reasons)


@pytest.mark.parametrize("mode", ["forward", "packed_forward", "message"])
def test_an_event_time_whose_nanoseconds_reach_a_second_is_a_skipped_entry(mode):
    # Replayed from a dead letter, (2^32-1 s, 2^32-1 ns) once stopped the agent from starting.
    def et(seconds: int, nanos: int, ext8: bool = False) -> bytes:
        body = seconds.to_bytes(4, "big") + nanos.to_bytes(4, "big")
        return (b"\xc7\x08\x00" if ext8 else b"\xd7\x00") + body

    record = b"\x81\xa1a\x01"
    bad_times = [et(2**32 - 1, 2**32 - 1), et(T, 10**9), et(T, 10**9, ext8=True)]
    good = b"\x92" + et(T, 10**9 - 1) + record
    for bad_time in bad_times:
        bad = b"\x92" + bad_time + record
        if mode == "forward":
            frame = b"\x93\xa1t\x92" + good + bad + pack({"chunk": "c"})
        elif mode == "packed_forward":
            frame = b"\x93\xa1t" + pack(good + bad) + pack({"chunk": "c"})
        else:
            frame = b"\x94\xa1t" + bad_time + record + pack({"chunk": "c"})
        batch = one_batch(feed_whole(frame))
        assert len(batch.skipped) == 1 and "nanoseconds" in batch.skipped[0], batch.skipped.reasons
        if mode != "message":
            assert batch.count == 1 and batch.entries == good


def test_a_frame_of_millions_of_tiny_entries_becomes_records_a_reader_can_hold():
    """5.2 million empty records gzip into 122 KB, under max_decompressed_size: one journal record
    of them took the delivery process to 2 GB. The frame is cut into bounded records, in order."""
    from agent.protocol.forward.entries import MAX_RECORD_ENTRIES

    entry = pack([event_time(1_700_000_000), {}])
    n = 5_200_000
    payload = gzip.compress(entry * n, 9)
    assert len(payload) < 200_000
    frame = pack(["t", payload, {"compressed": "gzip", "chunk": "big"}])
    batch = fwd.parse_frame(frame, 0, 64 * 1024 * 1024)
    assert batch.count == n and len(batch.records()) == -(-n // MAX_RECORD_ENTRIES)
    assert all(count <= MAX_RECORD_ENTRIES for _, count in batch.records())
    assert sum(count for _, count in batch.records()) == n
    assert b"".join(part for part, _ in batch.records()) == entry * n and batch.entries == b""
    small = one_batch(feed_whole(pack(["t", [[T, REC]] * 3])))
    assert small.records() == [(small.entries, 3)]  # an ordinary frame is one record, not copied


def test_entries_are_cut_by_bytes_too_and_an_entry_larger_than_the_bound_is_a_record_alone():
    from agent.protocol.forward.entries import split_entries

    entries = [pack([event_time(1_700_000_000), {"pad": "x" * size}]) for size in (10, 5000, 10, 10, 20000, 10)]
    data = b"".join(entries)
    parts = split_entries(data, len(entries), max_entries=100, max_bytes=4096)
    assert b"".join(p for p, _ in parts) == data and sum(c for _, c in parts) == len(entries)
    assert all(len(p) <= 4096 or c == 1 for p, c in parts)
    assert [c for _, c in parts] == [1, 1, 2, 1, 1]
    assert split_entries(b"", 0) == []  # no entries, no run (the forward output sends no empty chunk)


# -- the sender's size option: a hint that never changes what a frame decodes to -----------

_ENTRY_SHAPES = {
    "canonical": b"\x92\xd7\x00" + T.to_bytes(4, "big") + (123).to_bytes(4, "big") + b"\x81\xa1a\x01",
    "nanos_just_below_a_second": b"\x92\xd7\x00" + T.to_bytes(4, "big") + (10**9 - 1).to_bytes(4, "big") + b"\x80",
    "nanos_a_second": b"\x92\xd7\x00" + T.to_bytes(4, "big") + (10**9).to_bytes(4, "big") + b"\x80",
    "nanos_3b_high": b"\x92\xd7\x00" + T.to_bytes(4, "big") + bytes.fromhex("3b9b0000") + b"\x80",
    "ext8_time": b"\x92\xc7\x08\x00" + T.to_bytes(4, "big") + b"\0\0\0\0" + b"\x81\xa1a\x01",
    "integer_time": b"\x92" + pack(T) + b"\x81\xa1a\x01",
    "float_time": b"\x92" + pack(T + 0.25) + b"\x81\xa1a\x01",
    "other_ext_code": b"\x92\xd7\x01" + T.to_bytes(4, "big") + b"\0\0\0\0" + b"\x80",
    "array16_header": b"\xdc\x00\x02\xd7\x00" + T.to_bytes(4, "big") + b"\0\0\0\0" + b"\x80",
    "three_elements": b"\x93\xd7\x00" + T.to_bytes(4, "big") + b"\0\0\0\0" + b"\x80\xc0",
    "record_not_a_map": b"\x92\xd7\x00" + T.to_bytes(4, "big") + b"\0\0\0\0" + b"\x91\x01",
    "integer_key": b"\x92\xd7\x00" + T.to_bytes(4, "big") + b"\0\0\0\0" + b"\x81\x01\x02",
    "nested_integer_key": b"\x92\xd7\x00" + T.to_bytes(4, "big") + b"\0\0\0\0" + b"\x81\xa1n\x81\x01\x02",
    "not_utf8_key": b"\x92\xd7\x00" + T.to_bytes(4, "big") + b"\0\0\0\0" + b"\x81\xa2\xff\xfe\x01",
    # Past msgpack's nesting limit (which every reader of the journal has): only bytes tell.
    "deep_record": b"\x92\xd7\x00" + T.to_bytes(4, "big") + b"\0\0\0\0" + b"\x81\xa1k" * 1500 + b"\xc0",
    "large_flat_record": b"\x92\xd7\x00" + T.to_bytes(4, "big") + b"\0\0\0\0" + pack({"pad": "x" * 3000}),
    "not_an_array": b"\xa5hello",
}


@example(shapes=["canonical"] * 9 + ["deep_record"], size_delta=0, cut=0)  # deep, but small on average
@example(shapes=["canonical"] * 9 + ["large_flat_record"], size_delta=0, cut=0)
@example(shapes=["canonical"] * 9 + ["nanos_a_second"], size_delta=0, cut=0)
@settings(max_examples=400, deadline=None)
@given(
    shapes=st.lists(st.sampled_from(sorted(_ENTRY_SHAPES)), min_size=1, max_size=12),
    size_delta=st.sampled_from([0, 0, 0, -1, 1, None, "zero", "huge", "negative", "bool"]),
    cut=st.integers(0, 3),
)
def test_the_size_option_never_changes_what_a_packed_payload_decodes_to(shapes, size_delta, cut):
    payload = b"".join(_ENTRY_SHAPES[s] for s in shapes)
    payload = payload[: len(payload) - cut]  # a truncated last entry as well
    sizes = {None: None, "zero": 0, "huge": 2**32 - 1, "negative": -5, "bool": True}
    size = sizes[size_delta] if size_delta in sizes else len(shapes) + size_delta
    options = {"chunk": "c"} if size is None else {"chunk": "c", "size": size}
    hinted = fwd.parse_frame(pack(["t", payload, options]), NOW)
    plain = fwd.parse_frame(pack(["t", payload, {"chunk": "c"}]), NOW)
    assert (hinted.entries, hinted.count, hinted.skipped.reasons, len(hinted.skipped)) == (
        plain.entries,
        plain.count,
        plain.skipped.reasons,
        len(plain.skipped),
    )


def test_entries_as_sent_with_their_size_are_taken_whole_without_the_entry_by_entry_scan(monkeypatch):
    from agent.protocol.forward import entries as entries_module

    payload = _ENTRY_SHAPES["canonical"] * 999 + _ENTRY_SHAPES["nanos_just_below_a_second"]

    def no_scan(*args, **kwargs):
        raise AssertionError("scanned entry by entry")

    monkeypatch.setattr(entries_module.msgpack, "Unpacker", no_scan)
    entries, count, skipped = fwd.scan_entries(payload, NOW, size=1000)
    assert count == 1000 and entries == payload and len(skipped) == 0
    with pytest.raises(AssertionError):  # a size one short: the scan decides
        fwd.scan_entries(payload, NOW, size=999)


@settings(max_examples=400, deadline=None)
@given(
    shapes=st.lists(st.sampled_from(sorted(_ENTRY_SHAPES)), min_size=1, max_size=6),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_flipped_bytes_decode_the_same_with_the_size_option_or_without(shapes, flips):
    payload = bytearray(b"".join(_ENTRY_SHAPES[s] for s in shapes))
    for at, value in flips:
        payload[at % len(payload)] = value

    def decoded(options):
        try:
            batch = fwd.parse_frame(pack(["t", bytes(payload), options]), NOW)
        except ProtocolError:
            return "refused"
        return batch.entries, batch.count, batch.skipped.reasons, len(batch.skipped)

    assert decoded({"chunk": "c", "size": len(shapes)}) == decoded({"chunk": "c"})
