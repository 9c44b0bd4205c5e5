"""The Hive purchase_log normalizer: golden cases from the spec's own example, and properties."""

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agent.hive.purchase_log import normalize, normalize_slow
from agent.hive.spec import SPEC_FIELDS, camel, spec_name

TAG = "ha2union.game.misample.purchase_log"

# The spec's own example (shared/seeds/003_…), as written there, inconsistencies included.
SEED_EXAMPLE = {
    "channel": "C2S",
    "uid": 111111111,
    "did": 222222222,
    "mac_address": "000000000000",
    "platform": "A",
    "os_version": "6.0.1",
    "market": "GO",
    "game_index": "2414",
    "app_id": "com.com2us.misample",
    "version": "2.4.1",
    "level": 21,
    "nationality": "us",
    "language": "en",
    "ip": "112.114.245.232",
    "transaction_id": "GPA.3333-8449-4747-11111",
    "product_id": "com.com2us.misample.normal.freefull.google.global.cash01",
    "product_name": "uc9c0",
    "product_price": "1.99",
    "quantity": 1,
    "currency": "USD",
    "purchase_time": "2018-05-01 11:22:33",
    "path": "gs",
    "server_ip": "114.114.245.239",
    "device_name": "samsung SM-G920P",
    "company": "C2S",
    "game_language": "en",
    "device_language": "ko",
    "server_id": "KR-2",
    "guid": "ca4bd34c867f4617a819ae139d8d6670",
    "hiveiap_purchase_test": "Y",
}
COMPLETE = dict(
    SEED_EXAMPLE,
    client_ip="112.114.245.232",
    giftee_uid=None,
    server_uid=5,
    character_id=0,
    character_type_id=0,
    character_level=0,
    item_send_ok="Y",
    timezone="GMT+09:00",
    product_name="지 Gem Pack",
)
del COMPLETE["ip"]


def fields(problems):
    return sorted(p.field for p in problems)


def rules(problems):
    return {(p.field, p.rule) for p in problems}


def test_the_seed_example_strict_names_every_missing_required_field():
    n = normalize(SEED_EXAMPLE, TAG, strict=True)
    assert not n.ok
    # giftee_uid is missing too, and a missing giftee_uid means null ("not a gift"): no finding.
    assert fields(n.errors) == sorted(
        ["server_uid", "character_id", "character_type_id", "character_level", "item_send_ok"]
    )
    assert all(p.rule == "required" for p in n.errors)


def test_the_seed_example_by_default_is_normalized_with_warnings():
    n = normalize(SEED_EXAMPLE, TAG)
    assert n.ok and n.errors == []
    r = n.record
    assert r["client_ip"] == "112.114.245.232" and "ip" not in r  # alias
    assert r["game_index"] == 2414  # "2414" → smallint
    assert r["product_price"] == 1.99 and isinstance(r["product_price"], float)
    assert r["nationality"] == "US"
    assert r["category"] == "misample_purchase_log"
    assert r["timezone"] == "GMT+09:00"  # absent → KST, as Hive does
    assert r["guid"] == "ca4bd34c867f4617a819ae139d8d6670"
    assert n.extra == {}
    assert {
        ("ip", "alias"),
        ("timezone", "timezone_assumed"),
        ("product_name", "escape_lost"),
        ("server_uid", "required"),
        ("item_send_ok", "required"),
    } <= rules(n.warnings)
    assert "giftee_uid" not in fields(n.warnings)


def test_a_complete_record_is_valid_and_untouched_where_already_right():
    n = normalize(COMPLETE, TAG, strict=True)
    assert n.ok, n.errors
    assert n.warnings == []
    assert n.record["giftee_uid"] is None  # null means "not a gift": kept
    assert set(n.record) <= set(SPEC_FIELDS)


@pytest.mark.parametrize("key", ["server_id", "serverId", "serverid", "SERVER_ID"])
def test_every_spelling_maps_to_the_spec_name(key):
    rec = dict(COMPLETE)
    del rec["server_id"]
    rec[key] = "KR-2"
    n = normalize(rec, TAG, strict=True)
    assert n.ok and n.record["server_id"] == "KR-2"


def test_the_spec_spelling_wins_over_an_alias():
    n = normalize(dict(COMPLETE, ip="10.0.0.1"), TAG)
    assert n.record["client_ip"] == "112.114.245.232"
    assert any(p.field == "ip" for p in n.warnings)


VIOLATIONS = [
    ("product_price", "1,000.00", "format", "plain decimal"),
    ("product_price", "$1.99", "format", "plain decimal"),
    ("product_price", True, "type", "boolean"),
    ("product_price", float("inf"), "out_of_range", "out of range"),
    ("product_price", float("nan"), "out_of_range", "out of range"),
    ("nationality", "USA", "too_long", "longer than 2"),
    ("nationality", "K1", "format", "does not match"),
    ("game_index", "99999", "out_of_range", "out of range"),
    ("game_index", "12a", "type", "integer"),
    ("client_ip", "999.1.1.1", "format", "does not match"),
    ("platform", "ios", "not_allowed", "not one of"),
    ("market", "apple", "not_allowed", "not one of"),
    ("currency", "dollars", "too_long", "longer than 3"),
    ("currency", "U5D", "format", "does not match"),
    ("purchase_time", "yesterday", "invalid_time", "ISO 8601"),
    ("purchase_time", "2018-02-30 11:22:33", "invalid_time", "day is out of range"),
    ("product_name", "x" * 129, "too_long", "longer than 128"),
    ("item_send_ok", "yes", "not_allowed", "not one of"),
    ("device_name", "d" * 33, "too_long", "longer than 32"),  # seed 003: string(32)
    ("extra_uid", "e" * 31, "too_long", "longer than 30"),
    ("path", "GS", "not_allowed", "not one of"),
    ("level", 2**31, "out_of_range", "out of range"),
    ("is_emulator", 3, "out_of_range", "out of range"),
    ("quantity", 0, "quantity_not_positive", "fixes quantity to 1"),  # seed 003: fixed to 1
    ("quantity", -1, "quantity_not_positive", "fixes quantity to 1"),
]


@pytest.mark.parametrize("field_,value,rule,detail", VIOLATIONS)
def test_strict_a_violation_is_an_error_naming_field_value_and_rule(field_, value, rule, detail):
    n = normalize(dict(COMPLETE, **{field_: value}), TAG, strict=True)
    [problem] = [p for p in n.errors if p.field == field_]
    assert repr(problem.value) == repr(value) and problem.rule == rule and detail in str(problem)


@pytest.mark.parametrize("field_,value,rule,detail", VIOLATIONS)
def test_by_default_a_violation_is_kept_as_sent_and_warned(field_, value, rule, detail):
    n = normalize(dict(COMPLETE, **{field_: value}), TAG)
    assert n.ok
    [problem] = [p for p in n.warnings if p.field == field_]
    assert problem.rule == rule
    assert repr(n.record[field_]) == repr(value)  # kept as sent


@pytest.mark.parametrize(
    "field_,value,rule",
    [
        ("company", "CJE", "unknown_code"),  # seed 003 gives C2S and GVI as examples
        ("nationality", "ZZ", "unknown_code"),  # not ISO 3166-1
        ("currency", "ABC", "unknown_code"),  # not ISO 4217
        ("language", "qq", "unknown_code"),  # not ISO 639-1
        ("game_language", "xx-hans", "unknown_code"),
        ("product_name", "Gem Pack of twenty-one", "longer_than_advised"),  # seed 003: "20자 이내"
        ("quantity", 2, "quantity_not_one"),  # seed 003: fixed to 1
        ("category", "other_purchase_log", "category_mismatch"),
        ("os_version", "", "empty"),  # valid, and the mirrors then send no os
        ("product_name", "Gem uc9c0", "escape_lost"),  # a lost "\uc9c0" anywhere, not only first
        ("product_name", "\uac00uc9c0", "escape_lost"),
    ],
)
def test_advisories_are_warnings_even_when_strict(field_, value, rule):
    n = normalize(dict(COMPLETE, **{field_: value}), TAG, strict=True)
    assert n.ok, n.errors
    assert rules(n.warnings) == {(field_, rule)}


def test_a_name_spelled_without_its_underscores_is_taken_and_said_the_camel_form_is_not():
    squashed = {("serverid" if k == "server_id" else k): v for k, v in COMPLETE.items()}
    n = normalize(squashed, TAG, strict=True)
    assert n.ok and n.record["server_id"] == COMPLETE["server_id"]
    assert rules(n.warnings) == {("serverid", "misspelled")}
    camel_spelled = {("serverId" if k == "server_id" else k): v for k, v in COMPLETE.items()}
    assert normalize(camel_spelled, TAG, strict=True).warnings == []


def test_hex_after_a_u_inside_a_word_is_no_lost_escape():
    assert normalize(dict(COMPLETE, product_name="menu1234"), TAG).warnings == []


def test_real_codes_pass_without_a_word():
    n = normalize(
        dict(
            COMPLETE,
            company="GVI",
            nationality="TW",
            currency="TWD",
            language="zh",
            game_language="zh-hant",
            device_language="ko",
        ),
        TAG,
        strict=True,
    )
    assert n.ok and n.warnings == []


def test_a_category_that_disagrees_with_the_tag_is_replaced_by_the_tags():
    n = normalize(dict(COMPLETE, category="other_purchase_log"), "ha2union.game.derby.purchase_log")
    assert n.record["category"] == "derby_purchase_log"
    assert normalize(COMPLETE, "ha2union.game.derby.purchase_log").record["category"] == "derby_purchase_log"
    n = normalize(dict(COMPLETE, category="junk"), TAG)
    assert n.record["category"] == "misample_purchase_log" and "category" in fields(n.warnings)


def test_nationality_may_be_missing_when_client_ip_is_present():
    rec = dict(COMPLETE)
    del rec["nationality"]
    n = normalize(rec, TAG, strict=True)
    assert n.ok and n.warnings == [] and "nationality" not in n.record
    del rec["client_ip"]
    assert fields(normalize(rec, TAG, strict=True).errors) == ["client_ip", "nationality"]


def test_a_missing_giftee_uid_means_null():
    rec = dict(COMPLETE)
    del rec["giftee_uid"]
    n = normalize(rec, TAG, strict=True)
    assert n.ok and n.warnings == []


def test_coercions_the_sources_need():
    n = normalize(
        dict(COMPLETE, currency="usd", nationality=" kr ", language="EN", product_price=2, uid="42"), TAG, strict=True
    )
    assert n.ok
    assert (n.record["currency"], n.record["nationality"], n.record["language"]) == ("USD", "KR", "en")
    assert n.record["product_price"] == 2.0 and n.record["uid"] == 42


@pytest.mark.parametrize(
    "sent,kept",
    [
        ("2018-05-01 11:22:33", "2018-05-01 11:22:33"),
        ("2018-05-01T11:22:33", "2018-05-01 11:22:33"),
        ("2018-05-01T11:22", "2018-05-01 11:22:00"),
        ("2018-05-01T11:22:33.745", "2018-05-01 11:22:33"),
        ("2018-05-01T02:22:33Z", "2018-05-01 11:22:33"),  # written in the record's timezone (KST here)
        ("2018-05-01T11:22:33+09:00", "2018-05-01 11:22:33"),
    ],
)
def test_purchase_time_forms_that_name_a_moment(sent, kept):
    n = normalize(dict(COMPLETE, purchase_time=sent), TAG, strict=True)
    assert n.ok, n.errors
    assert n.record["purchase_time"] == kept


@pytest.mark.parametrize(
    "sent",
    [
        "2018-05-01",
        "2018-W18-2",
        "20180501",
        "20180501T112233",
        "2018-05-01 11",
        "11:22:33",
        "2018-05-01 11:22:33 KST",
        1525141353,
    ],
)
def test_a_date_alone_a_week_date_or_a_compact_date_is_not_a_purchase_time(sent):
    n = normalize(dict(COMPLETE, purchase_time=sent), TAG)
    assert ("purchase_time", "invalid_time") in rules(n.warnings)
    assert n.record["purchase_time"] == sent  # kept as sent: the mirrors dead-letter it
    assert not normalize(dict(COMPLETE, purchase_time=sent), TAG, strict=True).ok


@pytest.mark.parametrize(
    "sent,kept",
    [
        ("GMT+09:00", "GMT+09:00"),
        ("UTC+05:30", "GMT+05:30"),
        ("+09:00", "GMT+09:00"),
        ("-03:30", "GMT-03:30"),
        ("GMT+9", "GMT+09:00"),
        ("GMT-4", "GMT-04:00"),
        ("UTC", "GMT+00:00"),
        ("GMT", "GMT+00:00"),
        ("Z", "GMT+00:00"),
        ("GMT+10:30", "GMT+10:30"),
        ("-0330", "GMT-03:30"),
    ],
)
def test_timezone_forms_that_are_understood(sent, kept):
    n = normalize(dict(COMPLETE, timezone=sent), TAG, strict=True)
    assert n.ok and n.warnings == [], (n.errors, n.warnings)
    assert n.record["timezone"] == kept


@pytest.mark.parametrize("sent", ["KST", "Asia/Seoul", "GMT+15:00", "GMT+09:60", "9", "bogus"])
def test_a_timezone_present_but_not_understood_is_never_replaced_by_kst(sent):
    n = normalize(dict(COMPLETE, timezone=sent), TAG)
    assert n.ok and n.record["timezone"] == sent
    assert rules(n.warnings) == {("timezone", "format")}
    assert not normalize(dict(COMPLETE, timezone=sent), TAG, strict=True).ok


@pytest.mark.parametrize("missing", [None, "", "  "])
def test_only_a_missing_timezone_means_kst(missing):
    rec = dict(COMPLETE, timezone=missing)
    n = normalize(rec, TAG, strict=True)
    assert n.ok and n.record["timezone"] == "GMT+09:00"
    assert rules(n.warnings) == {("timezone", "timezone_assumed")}


def test_iso_purchase_time_fills_or_follows_the_timezone():
    n = normalize(dict(COMPLETE, purchase_time="2026-11-22T03:06:36.745Z", timezone=None), TAG)
    assert (n.record["purchase_time"], n.record["timezone"]) == ("2026-11-22 03:06:36", "GMT+00:00")
    n = normalize(dict(COMPLETE, purchase_time="2026-11-22T03:06:36Z", timezone="GMT+09:00"), TAG)
    assert (n.record["purchase_time"], n.record["timezone"]) == ("2026-11-22 12:06:36", "GMT+09:00")


def test_fields_outside_the_spec_are_kept_apart_for_the_mirrors():
    n = normalize(dict(COMPLETE, appsflyer_id="1234-abc", idfa="AAAA", advertising_id="gaid"), TAG)
    assert n.extra == {"appsflyer_id": "1234-abc", "idfa": "AAAA", "advertising_id": "gaid"}
    assert "appsflyer_id" not in n.record


def test_guid_is_generated_when_absent():
    rec = dict(COMPLETE)
    del rec["guid"]
    a, b = normalize(rec, TAG).record["guid"], normalize(rec, TAG).record["guid"]
    assert len(a) == 32 and a != b


def test_strict_every_violation_is_an_error_by_default_none():
    rec = dict(COMPLETE)
    del rec["transaction_id"], rec["server_uid"]
    assert fields(normalize(rec, TAG, strict=True).errors) == ["server_uid", "transaction_id"]
    n = normalize(rec, TAG)
    assert n.ok and {"server_uid", "transaction_id"} <= set(fields(n.warnings))


def test_the_table_is_the_one_source_of_the_checks_the_structs_and_the_names():
    import msgspec

    from agent.hive import spec
    from agent.hive.fast_path import Canonical, CanonicalEntry

    assert tuple(spec.BY_NAME) == spec.SPEC_FIELDS
    assert {f.name for f in msgspec.structs.fields(Canonical)} == set(spec.SPEC_FIELDS)
    assert {f.name for f in msgspec.structs.fields(CanonicalEntry)} == set(spec.SPEC_FIELDS)
    assert spec.MIRROR_FIELDS == ("platform", "app_id", "transaction_id", "product_price", "currency", "purchase_time")
    # Lengths as seed 003 writes them.
    assert {f.name: f.length for f in spec.FIELDS if f.length} == {
        "category": 200,
        "channel": 3,
        "extra_uid": 30,
        "platform": 1,
        "os_version": 30,
        "market": 2,
        "app_id": 200,
        "version": 30,
        "nationality": 2,
        "client_ip": 15,
        "transaction_id": 512,
        "product_id": 512,
        "product_name": 128,
        "currency": 3,
        "path": 2,
        "server_ip": 15,
        "device_name": 32,
        "company": 3,
        "language": 7,
        "mac_address": 12,
        "item_send_ok": 1,
        "guid": 64,
        "hiveiap_purchase_test": 100,
    }


def test_camel_case_names_of_the_final_store():
    assert [camel(f) for f in ("server_id", "os_version", "game_index", "hiveiap_purchase_test", "client_ip")] == [
        "serverId",
        "osVersion",
        "gameIndex",
        "hiveiapPurchaseTest",
        "clientIp",
    ]
    assert spec_name("hiveiapPurchaseTest") == "hiveiap_purchase_test" and spec_name("nope") is None


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=40),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
keys = st.one_of(
    st.sampled_from(list(SPEC_FIELDS) + ["ip", "serverId", "osversion", "appsflyer_id"]), st.text(max_size=12)
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, values, max_size=12), st.booleans())
@example({"vid": "0\x1f"}, False)  # Unicode's \s took \x1f, int() does not: a ValueError once
@example({"uid": "12\x1c"}, True)
def test_normalize_never_raises_and_is_idempotent(record, strict):
    n = normalize(record, TAG, strict=strict)
    if n.ok:
        again = normalize(n.record, TAG, strict=strict)
        assert again.ok and again.record == n.record


@settings(max_examples=100, deadline=None)
@given(st.fixed_dictionaries({k: st.just(v) for k, v in COMPLETE.items()}), st.sampled_from(list(COMPLETE)), values)
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
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**64), 2**64),
        st.floats(),
        st.sampled_from(
            [
                "",
                "1",
                "2414",
                "1.99",
                "KR",
                "kr",
                "gs",
                "Y",
                "GMT+09:00",
                "GMT+15:00",
                "2018-05-01 11:22:33",
                "2018-02-30 11:22:33",
                "u1234",
                "x" * 600,
                "1.2.3.4",
                "AP",
                "I",
                "C2S",
                "zh-hant",
                "a_purchase_log",
            ]
        ),
        st.text(max_size=8),
    ),
    max_size=4,
)

# Values the model takes without a word, in the forms senders use (coercions included).
ACCEPTABLE = {
    "game_index": ["2414", 2414, 0, -5],
    "uid": ["42", 42],
    "product_price": ["1.99", 1.99, 2, "100", 0.5],
    "nationality": ["kr", "TW", " us "],
    "currency": ["krw", "JPY", "usd"],
    "purchase_time": [
        "2026-11-22T03:06:36Z",
        "2026-11-22T03:06",
        "2018-05-01 11:22:33",
        "2018-05-01T11:22:33+09:00",
        "2020-02-29 23:59:59",
    ],
    "timezone": ["UTC", "GMT+9", "-03:30", "Z", "GMT+09:00", "+0530", "GMT-00:00", "UTC+14:00"],
    "language": ["ko", "EN", "zh-hant"],
    "company": ["GVI", "C2S"],
    "giftee_uid": [None, 0, "17"],
    "mac_address": ["", "482C6A1E593D"],
    "is_emulator": [0, 1, 2, "1"],
    "category": ["misample_purchase_log"],
    "extra_uid": ["kakao-1", None],
    "vid": [1, "2"],
    "hiveiap_purchase_test": ["Y", ""],
    "server_id": ["KR-2", ""],
    "serverId": ["KR-3"],
    "ip": ["10.1.2.3"],
    "level": ["7", 2**31 - 1],
    "product_name": ["Gem", "x" * 20],
}
acceptable = st.lists(st.sampled_from([(k, v) for k, vs in ACCEPTABLE.items() for v in vs]), max_size=6).map(dict)


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(perturbations, acceptable), st.sampled_from([None, "timezone", "guid", "category", "uid"]), st.booleans()
)
def test_whenever_the_fast_path_answers_the_model_agrees(changes, removed, strict):
    from agent.hive.fast_path import try_fast
    from agent.hive.purchase_log import normalize_slow

    rec = dict(CANONICAL, **changes)
    if removed:
        rec.pop(removed, None)
    before = dict(rec)
    fast = try_fast(rec, TAG, new_guid=lambda: "f" * 32)
    assert rec == before  # not in place: the sender's record is not touched
    if fast is None:
        return
    slow = normalize_slow(rec, TAG, strict=strict, new_guid=lambda: "f" * 32)
    assert slow.ok and slow.warnings == [], (rec, slow.errors, slow.warnings)
    assert fast.record == slow.record and fast.extra == slow.extra


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(perturbations, acceptable),
    st.sampled_from([None, "timezone", "guid", "category", "uid", "nationality", "giftee_uid"]),
)
def test_the_fast_paths_are_never_stricter_than_the_model(changes, removed):
    """What the model writes with nothing to say is canonical: both fast paths take it as it is."""
    from agent.hive.fast_path import try_fast

    rec = dict(CANONICAL, **changes)
    if removed:
        rec.pop(removed, None)
    slow = normalize_slow(rec, TAG)
    if not (slow.ok and slow.warnings == []):
        return
    fast = try_fast(dict(slow.record), TAG)
    assert fast is not None, slow.record
    assert fast.record == slow.record
    done = _hive_filter().apply_batch(TAG, _entries([slow.record]), 1)
    assert done is not None, slow.record
    assert _decoded(done.entries) == [slow.record]


def test_in_place_gives_the_same_answer_without_a_copy():
    rec = dict(CANONICAL, appsflyer_id="af-1")
    copy = normalize(dict(rec), TAG)
    in_place = normalize(rec, TAG, in_place=True)
    assert in_place.record is rec and (in_place.record, in_place.extra) == (copy.record, copy.extra)
    bad = dict(CANONICAL, purchase_time="2018-02-30 11:22:33")
    del bad["guid"]  # the fast path tries a generated guid, and takes it back when it answers "not sure"
    before = dict(bad)
    assert not normalize(bad, TAG, in_place=True, strict=True).ok and bad == before  # a refused one is left as it was


@pytest.mark.parametrize(
    "t,ok",
    [
        ("2018-02-28 23:59:59", True),
        ("2018-02-29 00:00:00", False),
        ("2020-02-29 12:00:00", True),
        ("2018-05-01 24:00:00", False),
        ("2018-05-01 11:60:00", False),
        ("2018-05-01 11:22:61", False),
    ],
)
def test_fast_path_times_are_real_times(t, ok):
    from agent.hive.fast_path import try_fast

    assert (try_fast(dict(CANONICAL, purchase_time=t), TAG) is not None) == ok


# -- the batch path (bytes in, bytes out) never disagrees with the per-record path ----


def _hive_filter():
    from agent.filters.hive import HiveFilter, HiveFilterConfig

    return HiveFilter(HiveFilterConfig.validate(dict(type="hive", name="h", dedup_window=0)))


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
    assert done is not None and done.count == 3
    per_record = _hive_filter().apply(TAG, [[0, dict(r)] for r in records])
    assert _decoded(done.entries) == [r for _, r in per_record.entries]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(perturbations, st.sampled_from([None, "category", "guid", "uid", "mac_address"])),
        min_size=1,
        max_size=3,
    )
)
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
    assert _decoded(done.entries) == [msgpack.unpackb(msgpack.packb(n.record), raw=False) for n in slow]


def test_the_hive_filter_counts_records_passed_on_with_a_warning():
    f2 = _hive_filter()
    f2.strict = False
    kept = f2.apply(TAG, [[0, dict(SEED_EXAMPLE)], [0, dict(CANONICAL)]])
    assert len(kept.entries) == 2 and f2.stats.warnings == 1


def test_the_per_record_fast_path_refuses_a_value_its_fields_pattern_refuses():
    """The per-record struct carries no patterns (msgspec's pattern checks left a new method name in
    CPython's method cache each call): each pattern is checked after it, per distinct value."""
    import msgspec

    from agent.hive.fast_path import _PATTERNS, CanonicalRecord, _pattern_of, try_fast

    assert all(_pattern_of(f.type) is None for f in msgspec.structs.fields(CanonicalRecord))
    assert try_fast(dict(CANONICAL), TAG) is not None
    for name, pattern in _PATTERNS.items():
        bad = f"<{name}: not a value of it>"
        assert pattern.search(bad) is None
        assert try_fast(dict(CANONICAL, **{name: bad}), TAG) is None, name
