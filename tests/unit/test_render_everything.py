"""Whatever ingest acknowledges renders in every output format: JSON lines (raw, snake, camel),
Hive's HTTP records, and Forward's msgpack. Fed with frames real senders wrote, mutated, and with
hand-built records at the edges of what msgpack allows."""

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import ProtocolError
from agent.hive.records import render, restyler
from agent.journal.batch import TagBatch
from agent.journal.record import batch_payload
from agent.outputs.http import hive_records
from agent.protocol import forward as fwd
from agent.render import LineRenderer, allow_deep_records, to_json
from tests.unit.test_forward_codec import FRAMES, NOW, T, pack
from tests.wire import event_time

allow_deep_records()  # as the delivery process does at start (not inside a hypothesis test: it resets it)


def _deep(depth: int) -> bytes:
    return b"\x81\xa1k" * depth + b"\xc0"  # {"k": {"k": ... nil}}


def _entry(record_bytes: bytes) -> bytes:
    return b"\x92" + pack(event_time(T)) + record_bytes


EDGES = [
    _entry(_deep(1000)),  # msgspec and orjson refuse this deep; msgpack takes up to 1,024
    # A record's own keys are strings (ingest refuses others); a map inside it may have any keys:
    # {"n": {[1]: "a", {1: 2}: "b"}}, keys JSON has no form for.
    _entry(b"\x81\xa1n\x82\x91\x01\xa1a\x81\x01\x02\xa1b"),
    # {"n": {bin key: 1, 1: 2**64-1}, "\xff\xfe": "x"}: a bin key, an int key, and a key that is not UTF-8.
    _entry(b"\x82\xa1n\x82\xc4\x02\xff\xfe\x01\x01\xcf\xff\xff\xff\xff\xff\xff\xff\xff\xa2\xff\xfe\xa1x"),
    _entry(b"\x81\xa1e\xd4\x05\x01"),  # an ext type as a value
    _entry(b"\x80"),
]
EDGE_FRAMES = [pack(["edge.tag", b"".join(EDGES), {"chunk": "e"}])] + [pack(["edge.one", e, {}]) for e in EDGES]


def render_everywhere(tag: str, entries: bytes, count: int) -> None:
    payload = batch_payload(tag, entries, count)
    LineRenderer().render(TagBatch(tag, payload=payload))
    for style in ("raw", "snake", "camel"):
        batch = TagBatch(tag, payload=payload)
        LineRenderer().render(batch, restyler(style))
        for _, _, body in hive_records(TagBatch(tag, payload=payload), style):
            to_json(body)
        packer = msgpack.Packer(unicode_errors="surrogateescape")
        for _, record in TagBatch(tag, payload=payload).entries:
            packer.pack(render(record, style))


def test_records_at_the_edges_of_msgpack_render_everywhere():
    for frame in EDGE_FRAMES:
        [batch] = fwd.ForwardDecoder().feed(frame, NOW)
        assert batch.count >= 1, batch.skipped.reasons
        render_everywhere(batch.tag, batch.entries, batch.count)


# Hypothesis caps the recursion limit while it runs a test, below what rendering 1,000 levels needs:
# the deepest records are the deterministic test's above.
SHALLOW_EDGES = [f for f in EDGE_FRAMES if _deep(100) not in f]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(FRAMES + SHALLOW_EDGES),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
)
def test_every_record_of_a_mutated_real_frame_that_ingest_takes_renders_everywhere(frame, flips):
    data = bytearray(frame)
    for at, value in flips:
        data[at % len(data)] = value
    try:
        frames = fwd.ForwardDecoder(max_frame_size=1 << 20, max_decompressed_size=1 << 20).feed(bytes(data), NOW)
    except ProtocolError:
        return
    for batch in frames:
        if isinstance(batch, fwd.EventBatch) and batch.count:
            render_everywhere(batch.tag, batch.entries, batch.count)
