"""Rendering journal batches as JSON lines, including records no JSON encoder likes."""

import msgpack
import orjson

from agent.journal.batch import TagBatch, decode_entries
from agent.journal.record import batch_payload
from agent.render import LineRenderer, rfc3339_ns
from tests.wire import event_time


def payload(tag, *entries_raw: bytes) -> bytes:
    return batch_payload(tag, b"".join(entries_raw), len(entries_raw))


def entry(sec, nsec, record, **pack_kw) -> bytes:
    return msgpack.packb([event_time(sec, nsec), record], use_bin_type=True, **pack_kw)


def lines_of(data: bytes) -> list[dict]:
    assert data.endswith(b"\n")
    return [orjson.loads(x) for x in data.splitlines()]


def test_a_batch_renders_one_line_per_event_with_nanoseconds():
    p = payload("a.b", entry(1_700_000_000, 5, {"x": 1}), entry(1_700_000_001, 999_999_999, {"y": [1, "z"]}))
    out = lines_of(LineRenderer().render(TagBatch("a.b", payload=p)))
    assert out == [
        {"tag": "a.b", "time": "2023-11-14T22:13:20.000000005Z", "record": {"x": 1}},
        {"tag": "a.b", "time": "2023-11-14T22:13:21.999999999Z", "record": {"y": [1, "z"]}},
    ]


def test_decoded_and_payload_paths_agree():
    p = payload("t", entry(1_700_000_000, 1, {"k": "v", "n": 2.5}))
    tag, entries = decode_entries(p)
    batch = TagBatch(tag, entries)
    assert tag == "t" and batch.entries == [[1_700_000_000 * 10**9 + 1, {"k": "v", "n": 2.5}]]
    assert len(TagBatch("t", payload=p)) == 1
    from_entries = LineRenderer().render(TagBatch("t", batch.entries))
    assert from_entries == LineRenderer().render(TagBatch("t", payload=p))
    assert rfc3339_ns(1_700_000_000 * 10**9 + 1) == "2023-11-14T22:13:20.000000001Z"


def test_records_json_cannot_hold_still_render():
    odd = msgpack.packb(
        [
            event_time(1_700_000_000, 0),
            {"bin": b"\x00\xff", 7: "int key", "ext": msgpack.ExtType(5, b"ab"), "big": 2**64 - 1},
        ],
        use_bin_type=True,
    )
    bad_utf8 = b"\x92" + msgpack.packb(event_time(1_700_000_000, 0)) + b"\x81\xa1s\xa2\xff\xfe"
    for raw in (odd, bad_utf8):
        [line] = lines_of(LineRenderer().render(TagBatch("t", payload=payload("t", raw))))
        assert line["tag"] == "t" and line["time"].startswith("2023-11-14T22:13:20")
    [line] = lines_of(LineRenderer().render(TagBatch("t", payload=payload("t", odd))))
    assert line["record"]["7"] == "int key" and line["record"]["big"] == 2**64 - 1
