"""The filter chain at ingest: decode, filter, encode, whatever bytes the senders put in."""

import msgpack

from agent.filters.record_transformer import RecordTransformer, RecordTransformerConfig
from agent.ingest import run_filters
from tests.wire import event_time, pack


def test_records_are_changed_and_the_event_time_kept():
    cfg = RecordTransformerConfig.validate(
        dict(type="record_transformer", match="a.**", record={"region": "kr"}, remove_keys=["debug"])
    )
    f = RecordTransformer(cfg)
    entries = pack([event_time(1_700_000_000, 7), {"x": 1, "debug": True}]) + pack([event_time(1, 0), {"y": 2}])
    out, count, on_durable, refused = run_filters([f], "a.b", entries, 2)
    assert count == 2 and on_durable is None and refused == {}
    decoded = list(msgpack.Unpacker(__import__("io").BytesIO(out), raw=False))
    assert decoded == [
        [msgpack.ExtType(0, event_time(1_700_000_000, 7).data), {"x": 1, "region": "kr"}],
        [msgpack.ExtType(0, event_time(1, 0).data), {"y": 2, "region": "kr"}],
    ]


def test_invalid_utf8_survives_the_round_trip_byte_for_byte():
    f = RecordTransformer(RecordTransformerConfig.validate(dict(type="record_transformer", record={"k": "v"})))
    entry = b"\x92" + pack(event_time(1_700_000_000)) + b"\x81\xa1s\xa2\xff\xfe"  # {"s": <invalid UTF-8>}
    out, count, _, _ = run_filters([f], "t", entry, 1)
    [[_, record]] = list(msgpack.Unpacker(__import__("io").BytesIO(out), raw=True))
    assert count == 1 and record == {b"s": b"\xff\xfe", b"k": b"v"}
