"""A journal batch read one record at a time (agent/journal/batch.py: TagBatch.one_by_one): the same
records as the whole decode, each kept as its own msgpack, and the ledger's facts read from those bytes."""

from datetime import timedelta

import msgpack
import msgspec
import pytest

from agent.hive.records import EXTRA_KEY
from agent.journal.batch import TagBatch, decode_entries, record_of
from agent.journal.record import batch_payload
from agent.ledger.tally import Reader
from tests.wire import event_time, pack

TAG = "ha2union.game.misample.purchase_log"
RECORDS = [
    {"transaction_id": "T-1", "purchase_time": "2026-12-01 23:30:00", "currency": "KRW", "product_price": 1400},
    {"transaction_id": "T-2", "product_price": 1.99, "timezone": "UTC", "refund": "Y", "nested": {"a": [1, None]}},
    {"transaction_id": "T-3", "product_price": "9.90", EXTRA_KEY: {"refund": True}},
    "not a map",
    {},
]


def payload_of(entries: list[bytes], target: str | None = None) -> bytes:
    return batch_payload(TAG, b"".join(entries), len(entries), target)


def entries_of(records: list) -> list[bytes]:
    return [pack([event_time(1_764_633_600 + i, 5), r]) for i, r in enumerate(records)]


@pytest.mark.parametrize("target", [None, "hive"])
def test_each_record_is_decoded_as_it_is_reached_and_kept_as_its_own_bytes(target):
    payload = payload_of(entries_of(RECORDS), target)
    whole = decode_entries(payload)[1]
    steps = list(TagBatch(TAG, payload=payload).one_by_one())
    assert [[t, r] for t, r, _ in steps] == [list(e) for e in whole]
    for (_, record, kept), original in zip(steps, RECORDS, strict=True):
        assert not isinstance(kept, (dict, str))  # its bytes, not the objects
        assert msgpack.unpackb(bytes(kept), raw=False) == original
        assert record_of(kept) == record


def test_a_record_msgspec_refuses_is_read_the_lenient_way_and_only_that_one():
    # A str with invalid UTF-8 (a flipped byte) among good records: that record alone is read by
    # msgpack (the whole decode reads every record of such a batch so), each as it would be alone.
    bad_text = b"\x82\xa1i\x01\xa4name\xa3\xff\xfeA"
    entries = entries_of(RECORDS[:2]) + [b"\x92" + pack(event_time(1_764_633_601)) + bad_text]
    steps = list(TagBatch(TAG, payload=payload_of(entries)).one_by_one())
    assert [r for _, r, _ in steps] == [decode_entries(payload_of([e]))[1][0][1] for e in entries]
    assert steps[2][1] == {"i": 1, "name": "\ufffd\ufffdA"} and steps[0][1] == RECORDS[0]
    assert [record_of(kept) for _, _, kept in steps] == [r for _, r, _ in steps]


def test_a_batch_that_holds_its_entries_gives_them_as_they_are():
    entries = [[1, {"a": 1}], [2, "x"]]
    assert [(t, r, k) for t, r, k in TagBatch(TAG, entries).one_by_one()] == [(1, {"a": 1}, {"a": 1}), (2, "x", "x")]


def test_the_ledger_reads_the_same_facts_from_a_kept_record_as_from_the_record():
    reader = Reader(timedelta(hours=9))
    for i, record in enumerate(RECORDS):
        raw = msgspec.Raw(pack(record))
        assert reader.facts(TAG, i * 10**18, raw) == reader.facts(TAG, i * 10**18, record), record
    # A refund only in the extra fields, and one a struct cannot read (a list where a map goes):
    refund = {"product_price": 5, "currency": "USD", EXTRA_KEY: {"refund": "Y"}}
    odd = {"product_price": 5, EXTRA_KEY: ["refund"]}
    for record in (refund, odd):
        assert reader.facts(TAG, 0, msgspec.Raw(pack(record))) == reader.facts(TAG, 0, record)
    assert reader.facts(TAG, 0, msgspec.Raw(pack(refund))).amount < 0


def _rendered_whole(payload: bytes, style: str) -> list:
    """What the forward output sent before it read records one at a time: every record decoded and rendered."""
    from agent.hive.records import render

    return [[t, render(r, style)] for t, r in decode_entries(payload)[1]]


@pytest.mark.parametrize("style", ["snake", "camel"])
def test_the_forward_output_renders_a_batch_one_record_at_a_time_and_keeps_none(style):
    from agent.outputs.forward_chunks import entries_in_style

    raw = entries_of(RECORDS)
    raw.insert(1, b"\x92" + msgpack.packb(event_time(1_764_633_600, 0)) + b"\x81\xa1s\xa2\xff\xfe")  # invalid UTF-8
    payload = payload_of(raw)
    batch = TagBatch(TAG, payload=payload)
    entries, n = entries_in_style(batch, style)
    assert n == len(raw) and batch._entries is None  # nothing of it decoded stays with the batch
    assert decode_entries(batch_payload(TAG, entries, n))[1] == _rendered_whole(payload, style)
    if style == "snake":  # a record with no fields kept outside the spec goes as journaled, byte for byte
        assert raw[0] in entries and raw[1] in entries and raw[3] not in entries
