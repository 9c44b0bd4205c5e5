"""The Hive purchase_log normalizer: golden cases from the spec's own example, and properties."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.hive.purchase_log import SPEC_FIELDS, camel, normalize, normalize_slow, spec_name

TAG = "ha2union.game.misample.purchase_log"

# The spec's own example (shared/seeds/003_…), as written there, inconsistencies included.
SEED_EXAMPLE = {
    "channel": "C2S", "uid": 111111111, "did": 222222222, "mac_address": "000000000000", "platform": "A",
    "os_version": "6.0.1", "market": "GO", "game_index": "2414", "app_id": "com.com2us.misample",
    "version": "2.4.1", "level": 21, "nationality": "us", "language": "en", "ip": "112.114.245.232",
    "transaction_id": "GPA.3333-8449-4747-11111",
    "product_id": "com.com2us.misample.normal.freefull.google.global.cash01", "product_name": "uc9c0",
    "product_price": "1.99", "quantity": 1, "currency": "USD", "purchase_time": "2018-05-01 11:22:33",
    "path": "gs", "server_ip": "114.114.245.239", "device_name": "samsung SM-G920P", "company": "C2S",
    "game_language": "en", "device_language": "ko", "server_id": "KR-2",
    "guid": "ca4bd34c867f4617a819ae139d8d6670", "hiveiap_purchase_test": "Y",
}
COMPLETE = dict(SEED_EXAMPLE, client_ip="112.114.245.232", giftee_uid=None, server_uid=5, character_id=0,
                character_type_id=0, character_level=0, item_send_ok="Y", timezone="GMT+09:00",
                product_name="지 Gem Pack")
del COMPLETE["ip"]


def fields(problems):
    return sorted(p.field for p in problems)


def test_the_seed_example_strict_names_every_missing_required_field():
    n = normalize(SEED_EXAMPLE, TAG, strict=True)
    assert not n.ok
    assert fields(n.errors) == sorted(["giftee_uid", "server_uid", "character_id", "character_type_id",
                                       "character_level", "item_send_ok"])
    assert all(p.rule == "required by the spec" for p in n.errors)


def test_the_seed_example_not_strict_is_normalized_with_warnings():
    n = normalize(SEED_EXAMPLE, TAG, strict=False)
    assert n.ok
    r = n.record
    assert r["client_ip"] == "112.114.245.232" and "ip" not in r  # alias
    assert r["game_index"] == 2414  # "2414" → smallint
    assert r["product_price"] == 1.99 and isinstance(r["product_price"], float)
    assert r["nationality"] == "US"
    assert r["category"] == "misample_purchase_log"
    assert r["timezone"] == "GMT+09:00"  # absent → KST, as Hive does
    assert r["guid"] == "ca4bd34c867f4617a819ae139d8d6670"
    assert n.extra == {}
    warned = fields(n.warnings)
    assert "ip" in warned and "timezone" in warned and "product_name" in warned and "server_uid" in warned


def test_a_complete_record_is_valid_and_untouched_where_already_right():
    n = normalize(COMPLETE, TAG)
    assert n.ok, n.errors
    assert n.warnings == []
    assert n.record["giftee_uid"] is None  # null means "not a gift": kept
    assert set(n.record) <= set(SPEC_FIELDS)


@pytest.mark.parametrize("key", ["server_id", "serverId", "serverid", "SERVER_ID"])
def test_every_spelling_maps_to_the_spec_name(key):
    rec = dict(COMPLETE)
    del rec["server_id"]
    rec[key] = "KR-2"
    n = normalize(rec, TAG)
    assert n.ok and n.record["server_id"] == "KR-2"


def test_the_spec_spelling_wins_over_an_alias():
    n = normalize(dict(COMPLETE, ip="10.0.0.1"), TAG)
    assert n.record["client_ip"] == "112.114.245.232"
    assert any(p.field == "ip" for p in n.warnings)


@pytest.mark.parametrize("field_,value,rule", [
    ("product_price", "1,000.00", "plain decimal"),
    ("product_price", "$1.99", "plain decimal"),
    ("product_price", True, "boolean"),
    ("product_price", float("inf"), "out of range"),
    ("product_price", float("nan"), "out of range"),
    ("nationality", "USA", "longer than 2"),
    ("nationality", "K1", "does not match"),
    ("game_index", "99999", "out of range"),
    ("game_index", "12a", "integer"),
    ("client_ip", "999.1.1.1", "IPv4"),
    ("platform", "ios", "not one of"),
    ("market", "apple", "not one of"),
    ("currency", "dollars", "longer than 3"),
    ("currency", "U5D", "does not match"),
    ("purchase_time", "yesterday", "ISO 8601"),
    ("purchase_time", "2018-02-30 11:22:33", "day is out of range"),
    ("product_name", "x" * 129, "longer than 128"),
    ("item_send_ok", "yes", "not one of"),
])
def test_what_does_not_fit_is_an_error_naming_field_value_and_rule(field_, value, rule):
    n = normalize(dict(COMPLETE, **{field_: value}), TAG)
    [problem] = [p for p in n.errors if p.field == field_]
    assert repr(problem.value) == repr(value) and rule in problem.rule
    assert field_ not in n.record


def test_coercions_the_sources_need():
    n = normalize(dict(COMPLETE, currency="usd", nationality=" kr ", language="EN", product_price=2, uid="42"), TAG)
    assert n.ok
    assert (n.record["currency"], n.record["nationality"], n.record["language"]) == ("USD", "KR", "en")
    assert n.record["product_price"] == 2.0 and n.record["uid"] == 42


def test_iso_purchase_time_fills_or_follows_the_timezone():
    n = normalize(dict(COMPLETE, purchase_time="2026-11-22T03:06:36.745Z", timezone=None), TAG)
    assert (n.record["purchase_time"], n.record["timezone"]) == ("2026-11-22 03:06:36", "GMT+00:00")
    n = normalize(dict(COMPLETE, purchase_time="2026-11-22T03:06:36Z", timezone="GMT+09:00"), TAG)
    assert (n.record["purchase_time"], n.record["timezone"]) == ("2026-11-22 12:06:36", "GMT+09:00")
    n = normalize(dict(COMPLETE, timezone="GMT+10:30"), TAG)
    assert n.record["timezone"] == "GMT+10:30"
    n = normalize(dict(COMPLETE, timezone="bogus"), TAG)
    assert n.ok and n.record["timezone"] == "GMT+09:00" and fields(n.warnings) == ["timezone"]


def test_fields_outside_the_spec_are_kept_apart_for_the_mirrors():
    n = normalize(dict(COMPLETE, appsflyer_id="1234-abc", idfa="AAAA", advertising_id="gaid"), TAG)
    assert n.extra == {"appsflyer_id": "1234-abc", "idfa": "AAAA", "advertising_id": "gaid"}
    assert "appsflyer_id" not in n.record


def test_category_comes_from_the_tag_unless_the_record_has_a_valid_one():
    assert normalize(COMPLETE, "ha2union.game.derby.purchase_log").record["category"] == "derby_purchase_log"
    assert normalize(dict(COMPLETE, category="other_purchase_log"), TAG).record["category"] == "other_purchase_log"
    n = normalize(dict(COMPLETE, category="junk"), TAG)
    assert n.record["category"] == "misample_purchase_log" and "category" in fields(n.warnings)


def test_guid_is_generated_when_absent():
    rec = dict(COMPLETE)
    del rec["guid"]
    a, b = normalize(rec, TAG).record["guid"], normalize(rec, TAG).record["guid"]
    assert len(a) == 32 and a != b


def test_not_strict_only_mirror_fields_are_hard_errors():
    rec = dict(COMPLETE)
    del rec["transaction_id"], rec["server_uid"]
    n = normalize(rec, TAG, strict=False)
    assert fields(n.errors) == ["transaction_id"]
    assert "server_uid" in fields(n.warnings)


def test_camel_case_names_of_the_final_store():
    assert [camel(f) for f in ("server_id", "os_version", "game_index", "hiveiap_purchase_test", "client_ip")] == \
           ["serverId", "osVersion", "gameIndex", "hiveiapPurchaseTest", "clientIp"]
    assert spec_name("hiveiapPurchaseTest") == "hiveiap_purchase_test" and spec_name("nope") is None


values = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                   st.text(max_size=40), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3),
                                                                                            st.integers(), max_size=2))
keys = st.one_of(st.sampled_from(list(SPEC_FIELDS) + ["ip", "serverId", "osversion", "appsflyer_id"]),
                 st.text(max_size=12))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, values, max_size=12), st.booleans())
def test_normalize_never_raises_and_is_idempotent(record, strict):
    n = normalize(record, TAG, strict=strict)
    if n.ok:
        again = normalize(n.record, TAG, strict=strict)
        assert again.ok and again.record == n.record


@settings(max_examples=100, deadline=None)
@given(st.fixed_dictionaries({k: st.just(v) for k, v in COMPLETE.items()}), st.sampled_from(list(COMPLETE)),
       values)
def test_a_complete_record_with_one_field_changed_is_either_valid_or_names_that_field(record, key, value):
    n = normalize(dict(record, **{key: value}), TAG)
    assert n.ok or {p.field for p in n.errors} <= {key, "uid"}


# -- the fast path never disagrees with the model ---------------------------------

CANONICAL = normalize(COMPLETE, TAG).record


def test_a_canonical_record_takes_the_fast_path_with_the_models_answer():
    from agent.hive.fast_path import try_fast
    from agent.hive.purchase_log import normalize_slow
    rec = dict(CANONICAL, appsflyer_id="af-1")
    fast = try_fast(rec, TAG)
    slow = normalize_slow(rec, TAG)
    assert fast is not None and slow.ok and not slow.warnings
    assert (fast.record, fast.extra) == (slow.record, slow.extra)


perturbations = st.dictionaries(
    st.sampled_from(list(SPEC_FIELDS) + ["ip", "serverId", "appsflyer_id", "category"]),
    st.one_of(st.none(), st.booleans(), st.integers(-2**64, 2**64), st.floats(),
              st.sampled_from(["", "1", "2414", "1.99", "KR", "kr", "gs", "Y", "GMT+09:00", "GMT+15:00",
                               "2018-05-01 11:22:33", "2018-02-30 11:22:33", "u1234", "x" * 600, "1.2.3.4",
                               "AP", "I", "C2S", "zh-hant", "a_purchase_log"]),
              st.text(max_size=8)),
    max_size=4)


@settings(max_examples=500, deadline=None)
@given(perturbations, st.sampled_from([None, "timezone", "guid", "category", "uid"]), st.booleans())
def test_whenever_the_fast_path_answers_the_model_agrees(changes, removed, strict):
    from agent.hive.fast_path import try_fast
    from agent.hive.purchase_log import normalize_slow
    rec = dict(CANONICAL, **changes)
    if removed:
        rec.pop(removed, None)
    fast = try_fast(rec, TAG)
    if fast is None:
        return
    slow = normalize_slow(rec, TAG, strict=strict)
    assert slow.ok and slow.warnings == [], (rec, slow.errors, slow.warnings)
    assert fast.record == slow.record and fast.extra == slow.extra


def test_in_place_gives_the_same_answer_without_a_copy():
    rec = dict(CANONICAL, appsflyer_id="af-1")
    copy = normalize(dict(rec), TAG)
    in_place = normalize(rec, TAG, in_place=True)
    assert in_place.record is rec and (in_place.record, in_place.extra) == (copy.record, copy.extra)
    bad = dict(CANONICAL, purchase_time="2018-02-30 11:22:33")
    before = dict(bad)
    assert not normalize(bad, TAG, in_place=True).ok and bad == before  # a refused record is left as it was


@pytest.mark.parametrize("t,ok", [("2018-02-28 23:59:59", True), ("2018-02-29 00:00:00", False),
                                  ("2020-02-29 12:00:00", True), ("2018-05-01 24:00:00", False),
                                  ("2018-05-01 11:60:00", False), ("2018-05-01 11:22:61", False)])
def test_fast_path_times_are_real_times(t, ok):
    from agent.hive.fast_path import try_fast
    assert (try_fast(dict(CANONICAL, purchase_time=t), TAG) is not None) == ok


# -- the batch path (bytes in, bytes out) never disagrees with the per-record path ----

def _hive_filter():
    from agent.config import HiveFilterConfig
    from agent.filters.hive import HiveFilter
    return HiveFilter(HiveFilterConfig(type="hive", name="h", dedup_window=0), deadletters=None)


def _entries(records):
    import msgpack
    from tests.wire import event_time
    return b"".join(msgpack.packb([event_time(1_700_000_000, i), r]) for i, r in enumerate(records))


def _decoded(data):
    import io

    import msgpack
    return [r for _, r in msgpack.Unpacker(io.BytesIO(data), raw=False)]


def test_a_canonical_batch_takes_the_batch_path_with_the_same_records():
    records = [dict(CANONICAL, transaction_id=f"T-{i}") for i in range(3)]
    records[1].pop("category")
    done = _hive_filter().apply_batch(TAG, _entries(records), 3)
    assert done is not None and done[1] == 3
    per_record = _hive_filter().apply(TAG, [[0, dict(r)] for r in records])
    assert _decoded(done[0]) == [r for _, r in per_record]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(perturbations, st.sampled_from([None, "category", "guid", "uid", "mac_address"])),
                min_size=1, max_size=3))
def test_whenever_the_batch_path_answers_the_per_record_path_agrees(changes):
    import msgpack
    records = []
    for change, removed in changes:
        rec = dict(CANONICAL, **change)
        if removed:
            rec.pop(removed, None)
        records.append(rec)
    try:
        entries = _entries(records)
    except (OverflowError, TypeError, ValueError):
        return  # not representable in msgpack: no sender can send it
    done = _hive_filter().apply_batch(TAG, entries, len(records))
    if done is None:
        return
    slow = [normalize_slow(dict(r), TAG) for r in records]
    assert all(n.ok and not n.warnings and not n.extra for n in slow), [(n.errors, n.warnings) for n in slow]
    assert _decoded(done[0]) == [msgpack.unpackb(msgpack.packb(n.record), raw=False) for n in slow]


def test_the_hive_filter_counts_records_passed_on_with_a_warning():
    f2 = _hive_filter()
    f2.strict = False
    kept = f2.apply(TAG, [[0, dict(SEED_EXAMPLE)], [0, dict(CANONICAL)]])
    assert len(kept) == 2 and f2.stats["warnings"] == 1
