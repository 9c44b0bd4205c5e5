"""A batch taken a run of entries at a time (the Hive filter's batch path, the JSON-lines
renderer): the same answer as the whole batch, run boundaries included, and a bad entry
still costs only what it cost before."""

from __future__ import annotations

import weakref

import msgpack
import msgspec
import orjson
import pytest

from agent.component import Filter, Filtered
from agent.filters.hive import HiveFilter, HiveFilterConfig
from agent.hive.dedup_store import DedupStore
from agent.hive.records import restyler
from agent.ingest import run_filters
from agent.journal.batch import TagBatch
from agent.journal.record import batch_payload
from agent.protocol.forward.entries import array_runs
from agent.render import LineRenderer
from tests.unit.test_hive_purchase_log import CANONICAL, TAG, _decoded, _entries
from tests.wire import event_time

# -- cutting an array into runs --------------------------------------------------


@pytest.mark.parametrize(("n", "per_run"), [(0, 4), (1, 4), (4, 4), (5, 4), (300, 128), (20, 1)])
def test_the_runs_hold_every_item_in_order_as_its_own_bytes(n, per_run):
    items = [msgpack.packb([i, {"k": "v" * (i % 7), "n": i}]) for i in range(n)]
    array = msgpack.packb([msgpack.unpackb(x) for x in items])  # fixarray, array16 as the count says
    runs = list(array_runs(array, per_run))
    assert [len(msgpack.unpackb(r)) for r in runs] == [min(per_run, n - i) for i in range(0, n, per_run)]
    assert b"".join(r[5:] for r in runs) == b"".join(items)  # each run: an array32 header and the items' bytes
    assert [x for r in runs for x in msgpack.unpackb(r)] == [msgpack.unpackb(x) for x in items]


def test_the_runs_of_a_memoryview_are_the_runs_of_its_bytes():
    array = msgpack.packb(list(range(70)))
    assert list(array_runs(memoryview(array), 32)) == list(array_runs(array, 32))


@pytest.mark.parametrize("data", [b"", b"\xc1", msgpack.packb({"a": 1}), msgpack.packb([1, 2, 3])[:-1]])
def test_what_is_no_array_is_refused_at_once_not_at_the_first_run(data):
    with pytest.raises(msgspec.DecodeError):
        array_runs(data, 4)


# -- the renderer ------------------------------------------------------------------


def _entry(i: int, record: object) -> bytes:
    return msgpack.packb([event_time(1_700_000_000 + i, i), record], use_bin_type=True)


BAD_UTF8 = b"\x92" + msgpack.packb(event_time(1_700_000_000, 0)) + b"\x81\xa1s\xa2\xff\xfe"


@pytest.mark.parametrize("style", ["raw", "snake", "camel"])
def test_a_batch_of_many_runs_renders_as_its_entries_one_by_one(style):
    raws = [_entry(i, dict(CANONICAL, transaction_id=f"T-{i}")) for i in range(200)]
    raws[70] = _entry(70, {"bin": b"\x00\xff", 7: "int key", "big": 2**64 - 1})  # msgspec refuses: msgpack's way
    raws[150] = BAD_UTF8
    renderer, restyle = LineRenderer(), restyler(style)
    whole = renderer.render(TagBatch(TAG, payload=batch_payload(TAG, b"".join(raws), len(raws))), restyle)
    alone = b"".join(renderer.render(TagBatch(TAG, payload=batch_payload(TAG, r, 1)), restyle) for r in raws)
    assert whole == alone
    lines = [orjson.loads(x) for x in whole.splitlines()]
    assert len(lines) == 200 and lines[199]["record"]["transaction" + ("Id" if style == "camel" else "_id")] == "T-199"
    assert lines[70]["record"]["7"] == "int key" and "_extra" not in lines[0]["record"]


def test_decoded_entries_render_in_runs_as_their_payload_does():
    raws = [_entry(i, {"n": i, "s": "x" * i}) for i in range(150)]
    payload = batch_payload("t", b"".join(raws), len(raws))
    decoded = TagBatch("t", payload=payload).entries
    assert LineRenderer().render(TagBatch("t", decoded)) == LineRenderer().render(TagBatch("t", payload=payload))


# -- the Hive filter's batch path --------------------------------------------------


def _records(n: int) -> list[dict]:
    return [dict(CANONICAL, transaction_id=f"T-{i}") for i in range(n)]


def _filter(tmp_path=None) -> HiveFilter:
    if tmp_path is None:
        return HiveFilter(HiveFilterConfig.validate(dict(type="hive", name="h", dedup_window=0)))
    return HiveFilter(HiveFilterConfig.validate(dict(type="hive", name="h")), DedupStore(tmp_path / "d.sqlite", 3600))


def test_a_batch_of_many_runs_takes_the_batch_path_with_the_per_record_answer():
    records = _records(300)
    done = _filter().apply_batch(TAG, _entries(records), 300)
    assert done is not None and done.count == 300
    per_record = _filter().apply(TAG, [[0, dict(r)] for r in records])
    assert _decoded(done.entries) == [r for _, r in per_record.entries]


def test_one_record_not_canonical_in_the_last_run_sends_the_whole_batch_the_per_record_way(tmp_path):
    hive = _filter(tmp_path)
    records = _records(300)
    records[290] = dict(records[290], product_price="1.5")  # a string price: the slow path converts it
    assert hive.apply_batch(TAG, _entries(records), 300) is None
    assert hive.dedup is not None and hive.dedup.pending == set()  # the earlier runs reserved nothing
    entries, count, on_durable, refused = run_filters([hive], TAG, _entries(records), 300)
    assert count == 300 and not refused and on_durable is not None
    assert _decoded(entries)[290]["product_price"] == 1.5
    hive.close()


@pytest.mark.parametrize("duplicate", ["already delivered", "twice in the batch"])
def test_a_batch_with_a_duplicate_goes_the_per_record_way_which_drops_and_counts_it(tmp_path, duplicate):
    hive = _filter(tmp_path)
    assert hive.dedup is not None
    records = _records(200)
    if duplicate == "already delivered":
        hive.dedup.commit([(CANONICAL["app_id"], "T-150", False)])
    else:
        records[199] = dict(records[150])
    assert hive.apply_batch(TAG, _entries(records), 200) is None
    assert hive.dedup.pending == set()
    entries, count, on_durable, _ = run_filters([hive], TAG, _entries(records), 200)
    assert count == 199 and hive.stats.duplicates == 1
    assert on_durable is not None
    on_durable(True)
    hive.dedup.flush()
    assert hive.apply_batch(TAG, _entries(_records(10)), 10) is None  # now each of them is somebody's
    keys = {(CANONICAL["app_id"], r["transaction_id"], False) for r in records}
    assert hive.dedup.committed(list(keys)) == keys
    hive.close()


def test_a_new_batch_reserves_its_keys_until_it_is_durable_and_releases_them_if_not(tmp_path):
    hive = _filter(tmp_path)
    assert hive.dedup is not None
    done = hive.apply_batch(TAG, _entries(_records(300)), 300)
    assert done is not None and done.on_durable is not None
    assert len(hive.dedup.pending) == 300 and hive.stats.valid == 300
    done.on_durable(False)
    assert hive.dedup.pending == set()
    again = hive.apply_batch(TAG, _entries(_records(300)), 300)  # not journaled: nobody's duplicate
    assert again is not None and again.count == 300
    hive.close()


# -- the ledger's sums -------------------------------------------------------------


@pytest.mark.parametrize("n", [300, 2_100])  # decoded whole, and in runs of _SUMS_RUN
def test_the_ledger_sums_a_batch_of_many_runs_as_it_sums_it_record_by_record(n):
    from agent.ledger import tally
    from agent.ledger.tally import sums_of
    from agent.protocol.event_time import pack_event_time
    from tests.unit.test_ledger import KST, purchase

    assert (n > tally._SUMS_RUN) == (n == 2_100)
    records = [purchase(i, f"{i % 7}.99", ("USD", "KRW", "EUR")[i % 3]) for i in range(n)]
    records[-1] = dict(records[-1], purchase_time="2026-12-02 23:00:00")  # a day only the last run has
    entries = b"".join(b"\x92" + pack_event_time(0) + msgpack.packb(r) for r in records)
    fast = KST.sums(TAG, b"\xdd" + n.to_bytes(4, "big") + entries)
    assert fast == sums_of(KST, TAG, [[0, r] for r in records])
    assert sum(cell[0] for cell in fast.values()) == n
    # A time only the event time can date, in the last run: the whole batch is summed the slow way.
    odd = [*records[:-1], dict(records[-1], purchase_time="soon")]
    entries = b"".join(b"\x92" + pack_event_time(0) + msgpack.packb(r) for r in odd)
    assert KST.sums(TAG, b"\xdd" + n.to_bytes(4, "big") + entries) is None
    # A field no purchase can be counted by (a list where a price was): summed the slow way too.
    bad = [*records[:-1], dict(records[-1], product_price=[1])]
    entries = b"".join(b"\x92" + pack_event_time(0) + msgpack.packb(r) for r in bad)
    assert KST.sums(TAG, b"\xdd" + n.to_bytes(4, "big") + entries) is None


# -- the per-record way --------------------------------------------------------------


def _run_filters_with_runs_of(monkeypatch, per_run, tmp_path, records):
    from agent import ingest

    monkeypatch.setattr(ingest, "RUN", per_run)
    cfg = HiveFilterConfig.validate(dict(type="hive", name="h", strict=True))
    hive = HiveFilter(cfg, DedupStore(tmp_path / "d.sqlite", 3600))
    entries, count, on_durable, refused = run_filters([hive], TAG, _entries(records), len(records))
    assert on_durable is not None
    on_durable(True)
    answer = (_decoded(entries), count, {k: [(r[0], r[2], r[3]) for r in v] for k, v in refused.items()})
    stats = (hive.stats.valid, hive.stats.invalid, hive.stats.duplicates)
    hive.close()
    return answer, stats


def test_the_per_record_way_takes_a_batch_a_run_at_a_time_with_the_whole_batchs_answer(monkeypatch, tmp_path):
    records = _records(300)
    records[5] = dict(records[5], product_price="1.5")  # not canonical: the whole batch goes per record
    records[40] = dict(records[40], product_price="not a price")  # refused in the first run ...
    records[290] = dict(records[290], product_price="nor this")  # ... and in the third
    records[250] = dict(records[10])  # a duplicate of the first run's, in the third
    by_runs = _run_filters_with_runs_of(monkeypatch, 128, tmp_path / "runs", records)
    whole = _run_filters_with_runs_of(monkeypatch, 10_000, tmp_path / "whole", records)
    assert by_runs == whole
    (kept, count, refused), (valid, invalid, duplicates) = by_runs
    assert count == len(kept) == 297 and (valid, invalid, duplicates) == (298, 2, 1)
    assert [r["transaction_id"] for r in refused["h"][0][1:2]] == ["T-40"] and len(refused["h"]) == 2
    assert [r["transaction_id"] for r in kept][:6] == ["T-0", "T-1", "T-2", "T-3", "T-4", "T-5"]


class _Tracked(dict):
    """A record a test can hold a weak reference to (a plain dict cannot be one's referent)."""


class _WatchingFilter(Filter):
    """Passes records on as _Tracked, and notes at each run how many of the earlier runs' are alive."""

    name = "watch"

    def __init__(self) -> None:
        self.earlier: list[weakref.ref] = []
        self.alive_at_each_run: list[int] = []

    def apply(self, tag, entries):
        self.alive_at_each_run.append(sum(r() is not None for r in self.earlier))
        out = [[t, _Tracked(record)] for t, record in entries]
        self.earlier.extend(weakref.ref(record) for _, record in out)
        return Filtered(out, len(out))


def test_the_per_record_way_lets_each_runs_records_go_before_it_filters_the_next(monkeypatch):
    # What a burst leaves in pymalloc follows what was alive at once: a batch's runs kept
    # alive to its end were the whole batch decoded, however small the runs.
    from agent import ingest

    monkeypatch.setattr(ingest, "RUN", 10)
    watching = _WatchingFilter()
    records = [{"n": i, "s": "x" * i} for i in range(35)]
    entries, count, _, _ = run_filters([watching], TAG, _entries(records), len(records))
    assert watching.alive_at_each_run == [0, 0, 0, 0]  # four runs, none holding an earlier one's records
    assert count == 35 and [r["n"] for r in _decoded(entries)] == list(range(35))
