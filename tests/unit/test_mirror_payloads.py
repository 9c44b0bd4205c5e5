"""The vendor mappings, checked against the seeds' own examples."""

from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest

from agent.hive.purchase_log import normalize
from agent.hive.records import with_extra
from agent.mirrors.payloads import (
    Item,
    Refused,
    appsflyer_event,
    appsflyer_keeps_time,
    is_plain_revenue,
    naver_event,
    naver_items,
    platform_ids,
    purchase_from,
    revenue_string,
    validate_naver,
    wisetracker_body,
)

TAG = "ha2union.game.misample.purchase_log"

# The sample record of the Hive purchase_log spec (seed 003), as a game server sends it.
HIVE_SAMPLE = {
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


def normalized(record: dict) -> dict:
    result = normalize(dict(record), TAG)
    return with_extra(dict(result.record), result.extra)


def sample_purchase(**changes):
    return purchase_from(TAG, normalized({**HIVE_SAMPLE, **changes}))


def test_the_hive_sample_as_a_purchase():
    p = sample_purchase()
    assert (p.game, p.app_id, p.platform, p.transaction_id) == (
        "misample",
        "com.com2us.misample",
        "A",
        "GPA.3333-8449-4747-11111",
    )
    assert p.price == Decimal("1.99") and p.quantity == 1 and p.currency == "USD"
    # 11:22:33 KST (no timezone in the sample: Hive's fallback is +09:00) is 02:22:33 UTC.
    assert p.time_utc == datetime(2018, 5, 1, 2, 22, 33, tzinfo=UTC)
    assert p.test and not p.refund and p.client_ip == "112.114.245.232"


def test_the_hive_sample_to_appsflyer():
    p = sample_purchase(appsflyer_id="1525416000000-1234567890123456789", advertising_id="38400000-8cf0-11bd-b23e")
    body = appsflyer_event(p, platform_ids(p.platform, p.ids), bundle_id="com.com2us.misample")
    assert body == {
        "appsflyer_id": "1525416000000-1234567890123456789",
        "eventName": "af_purchase",
        "eventValue": body["eventValue"],
        "eventCurrency": "USD",
        "eventTime": "2018-05-01 02:22:33.000",
        "os": "6.0.1",
        "customer_user_id": "111111111",
        "ip": "112.114.245.232",
        "bundleIdentifier": "com.com2us.misample",
        "app_version_name": "2.4.1",
        "advertising_id": "38400000-8cf0-11bd-b23e",
    }
    assert isinstance(body["eventValue"], str)  # a JSON string, as the seed insists
    assert orjson.loads(body["eventValue"]) == {
        "af_revenue": "1.99",
        "af_currency": "USD",
        "af_content_id": HIVE_SAMPLE["product_id"],
        "af_quantity": "1",
        "af_order_id": "GPA.3333-8449-4747-11111",
    }
    assert len(orjson.dumps(body)) <= 1024


def test_appsflyer_refund_is_negative_revenue_and_ios_sends_att_and_idfa():
    p = sample_purchase(
        platform="I",
        refund="Y",
        appsflyer_id="1525416000000-1234567",
        idfa="AAAA",
        att=3,
        advertising_id="gaid-of-another-install",
    )
    body = appsflyer_event(p, platform_ids(p.platform, p.ids))
    assert orjson.loads(body["eventValue"])["af_revenue"] == "-1.99"
    assert (body["idfa"], body["att"]) == ("AAAA", 3) and "advertising_id" not in body


@pytest.mark.parametrize(
    "att,code",
    [
        ("authorized", 3),
        ("denied", 2),
        ("restricted", 1),
        ("notDetermined", 0),
        (2, 2),
        ("3", 3),
        ("granted", None),
        (7, None),
        (True, None),
        ("", None),
    ],
)
def test_appsflyer_att_as_apples_names_or_codes_anything_else_left_out(att, code):
    p = sample_purchase(platform="I", appsflyer_id="1525416000000-1234567", att=att)
    body = appsflyer_event(p, platform_ids(p.platform, p.ids))
    assert body.get("att") == code


@pytest.mark.parametrize("os_version", [None, "", "unknown", "iOS"])
def test_an_ios_purchase_without_a_real_os_version_is_refused_never_sent_as_unknown(os_version):
    p = sample_purchase(platform="I", os_version=os_version, appsflyer_id="1525416000000-1234567")
    with pytest.raises(Refused) as refused:
        appsflyer_event(p, platform_ids(p.platform, p.ids))
    assert refused.value.code == "invalid" and "os" in str(refused.value)


def test_android_without_os_version_is_sent_without_os_and_customer_user_id_falls_back_to_extra_uid():
    p = sample_purchase(os_version=None, uid=None, extra_uid="kakao-77", appsflyer_id="1525416000000-1234567")
    body = appsflyer_event(p, platform_ids(p.platform, p.ids))
    assert "os" not in body and body["customer_user_id"] == "kakao-77"


@pytest.mark.parametrize(
    "tz,event_time",
    [
        (None, "2018-05-01 02:22:33.000"),  # missing: KST
        ("UTC", "2018-05-01 11:22:33.000"),  # not KST: never nine hours early
        ("GMT-04:00", "2018-05-01 15:22:33.000"),
        ("Z", "2018-05-01 11:22:33.000"),
    ],
)
def test_appsflyer_event_time_follows_the_records_timezone(tz, event_time):
    p = sample_purchase(timezone=tz, appsflyer_id="1525416000000-1234567")
    assert appsflyer_event(p, platform_ids(p.platform, p.ids))["eventTime"] == event_time


@pytest.mark.parametrize(
    "changes",
    [
        {"timezone": "KST"},
        {"timezone": "Asia/Seoul"},
        {"purchase_time": "2018-05-01"},
        {"purchase_time": "2018-W18-2"},
        {"purchase_time": "20180501"},
    ],
)
def test_a_time_the_mirrors_cannot_place_is_invalid_time(changes):
    with pytest.raises(Refused) as refused:
        sample_purchase(**changes)
    assert refused.value.code == "invalid_time"


@pytest.mark.parametrize(
    "changes,why",
    [
        ({"quantity": 0}, "at least 1"),
        ({"quantity": -1}, "at least 1"),
        ({"quantity": "two"}, "whole number"),
        ({"quantity": 1.5}, "whole number"),
        ({"product_price": 0}, "above 0"),
        ({"product_price": "-1.99"}, "above 0"),
        ({"product_price": "1,99"}, "not a number"),
        ({"currency": "ABC"}, "ISO 4217"),
        ({"platform": "X"}, "platform"),
        ({"transaction_id": None}, "missing transaction_id"),
        ({"app_id": ""}, "missing app_id"),
        # Kept as sent in lenient mode; as text it would be Python's repr of it.
        ({"product_id": {"sku": "cash01"}}, "product_id is a dict"),
        ({"product_name": ["a", "b"]}, "product_name is a list"),
        ({"appsflyer_id": {"id": "1700000000000-1"}}, "appsflyer_id is a dict"),
        ({"os_version": ["6.0.1"]}, "os_version is a list"),
    ],
)
def test_what_would_make_vendor_data_wrong_is_invalid(changes, why):
    with pytest.raises(Refused) as refused:
        sample_purchase(**changes)
    assert refused.value.code == "invalid" and why in str(refused.value)


def test_a_number_where_a_text_goes_is_sent_as_its_digits():
    assert sample_purchase(product_id=12345).product_id == "12345"


def test_a_refund_may_carry_a_zero_or_negative_price_and_is_negative_revenue():
    assert sample_purchase(refund="Y", product_price="-1.99").revenue == Decimal("-1.99")
    assert sample_purchase(refund="Y", product_price="0").revenue == 0


def test_quantity_above_one_keeps_the_price_paid_as_revenue():
    # Seed 003: product_price is what the user paid, quantity is fixed to 1. A quantity of 3
    # is warned at ingest; the revenue is still the price paid, not three times it.
    p = sample_purchase(quantity=3, product_price="2.97", appsflyer_id="1525416000000-1234567")
    value = orjson.loads(appsflyer_event(p, platform_ids(p.platform, p.ids))["eventValue"])
    assert (value["af_revenue"], value["af_quantity"]) == ("2.97", "3")
    assert naver_items(p)[0].pay_amount == Decimal("2.97")


def test_appsflyer_without_appsflyer_id_is_a_missing_identifier():
    p = sample_purchase()
    with pytest.raises(Refused) as refused:
        appsflyer_event(p, {})
    assert refused.value.code == "missing_identifier"
    p = sample_purchase(platform="I", idfa="IDFA-1")  # an IDFA is no appsflyer_id
    with pytest.raises(Refused):
        appsflyer_event(p, platform_ids(p.platform, p.ids))


@pytest.mark.parametrize(
    "value,text",
    [("123", "123"), ("-123.45", "-123.45"), ("123.456", "123.456"), ("1.990", "1.99"), ("1E+2", "100"), ("-0", "0")],
)
def test_appsflyer_revenue_is_a_plain_number(value, text):
    assert revenue_string(Decimal(value)) == text
    assert is_plain_revenue(text)


@pytest.mark.parametrize("bad", ["1,234.56", "1,234", "$12", "12 USD", "1e5"])
def test_the_revenue_formats_the_seed_rejects(bad):
    assert not is_plain_revenue(bad)


# The seed's table: an event at Monday 21:00 (UTC) keeps its time arriving Tuesday 01:00, not Wednesday 09:00.
MONDAY_2100 = datetime(2026, 11, 16, 21, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "arrival,kept",
    [
        (datetime(2026, 11, 17, 1, 0, tzinfo=UTC), True),  # Tuesday 01:00
        (datetime(2026, 11, 17, 1, 59, 59, tzinfo=UTC), True),
        (datetime(2026, 11, 17, 2, 0, tzinfo=UTC), False),  # the 02:00 UTC cutoff
        (datetime(2026, 11, 18, 9, 0, tzinfo=UTC), False),  # Wednesday 09:00
        (datetime(2026, 11, 16, 20, 0, tzinfo=UTC), True),  # a future time on the same UTC date
    ],
)
def test_appsflyer_event_time_cutoff(arrival, kept):
    assert appsflyer_keeps_time(MONDAY_2100, arrival) is kept


def test_appsflyer_future_time_on_another_date_is_not_kept():
    assert not appsflyer_keeps_time(datetime(2026, 11, 17, 0, 30, tzinfo=UTC), MONDAY_2100)


def test_wisetracker_session_and_revenue_like_the_seed_example():
    # The seed's S2S example: quantity 2, revenue 566,200, the line total: what the user paid.
    p = sample_purchase(
        platform="I",
        product_id="2007291158",
        product_name="Leia Pleats Bag Black",
        product_price="566200",
        quantity=2,
        currency="KRW",
        idfa="12D9505B-A48E-410A-8787-75BF39DA82F5",
        advertising_id="gaid-elsewhere",
    )
    body = wisetracker_body(p, platform_ids(p.platform, p.ids), service_number=1234, send_ms=1620702642346, first=False)
    assert body == {
        "SESSION": {
            "vtTz": 1620702642346,
            "_wtno": 1234,
            "advtId": "12D9505B-A48E-410A-8787-75BF39DA82F5",
            "dSource": "SDK",
            "plat": "IOS",
            "lng": "ko",
            "phone": "samsung SM-G920P",
            "apVr": "2.4.1",
        },
        # vtTz is "required, current time" in REVENUE too: the send time, not the purchase time.
        "REVENUE": {
            "vtTz": 1620702642346,
            "event": "w_purchase",
            "transaction_id": "GPA.3333-8449-4747-11111",
            "currency": "KRW",
            "product": {
                "product_id": "2007291158",
                "product_name": "Leia Pleats Bag Black",
                "quantity": 2,
                "revenue": 566200,
            },
        },
    }


@pytest.mark.parametrize(
    "changes,code",
    [
        ({"refund": "Y"}, "unsupported_refund"),
        ({"platform": "B"}, "unsupported_platform"),
        ({"platform": "W", "advertising_id": "a"}, "unsupported_platform"),
        ({}, "missing_identifier"),
        ({"idfa": "IDFA-1"}, "missing_identifier"),  # an iOS id, Android buy
        ({"platform": "I", "advertising_id": "GAID-1"}, "missing_identifier"),
    ],
)
def test_wisetracker_refuses_what_it_cannot_express(changes, code):
    p = sample_purchase(**changes)
    with pytest.raises(Refused) as refused:
        wisetracker_body(p, platform_ids(p.platform, p.ids), service_number=1, send_ms=0, first=False)
    assert refused.value.code == code


def test_naver_items_table_from_the_seed_sums_to_1400_krw():
    # Unit prices 100, 200, 300 bought 1, 2 and 3 times: payAmount is each line's total.
    items = [Item(1, Decimal(100), "item1"), Item(2, Decimal(400), "item2"), Item(3, Decimal(900), "item3")]
    event, unsupported = naver_event(items, "KRW", {})
    assert [i["payAmount"] for i in event["items"]] == [100, 400, 900]
    assert event["value"] == 1400 and not unsupported
    assert all(i["ext1"] == "KRW" for i in event["items"])


def test_naver_usd_sends_items_without_value_and_other_currencies_convert_or_count():
    usd, _ = naver_event([Item(1, Decimal("1.99"), "gem")], "USD", {})
    assert "value" not in usd and usd["items"][0] == {"quantity": 1, "payAmount": 1.99, "ext1": "USD", "id": "gem"}
    jpy, unsupported = naver_event([Item(2, Decimal(240), "gem")], "JPY", {"JPY": 9.1})
    assert jpy["value"] == 2184 and jpy["items"][0]["ext1"] == "KRW" and not unsupported
    # No rate: items in their own currency and no value (a value of 0 would contradict payAmount).
    eur, unsupported = naver_event([Item(1, Decimal(5), "gem")], "EUR", {"JPY": 9.1})
    assert "value" not in eur and eur["items"][0]["ext1"] == "EUR" and unsupported


def test_naver_validation_enforces_the_documented_rules():
    with pytest.raises(Refused, match="sum of payAmount"):
        validate_naver({"items": [{"quantity": 1, "payAmount": 100.0, "ext1": "KRW"}], "value": 90.0})
    with pytest.raises(Refused, match="quantity"):
        validate_naver({"items": [{"quantity": 0, "payAmount": 100.0, "ext1": "KRW"}]})
    with pytest.raises(Refused, match="KRW"):
        validate_naver({"items": [{"quantity": 1, "payAmount": 5.0, "ext1": "EUR"}], "value": 5.0})


def test_appsflyer_payload_over_1kb_is_refused_not_sent():
    # A Google test purchase token as transaction_id, and a long SKU: each within Hive's 512.
    p = sample_purchase(transaction_id="t" * 500, product_id="p" * 500, appsflyer_id="1525416000000-1234567")
    with pytest.raises(Refused) as refused:
        appsflyer_event(p, platform_ids(p.platform, p.ids))
    assert refused.value.code == "too_large"


def test_a_record_no_hive_filter_normalized_is_read_the_same_way():
    raw = dict(HIVE_SAMPLE, purchase_time="2018-05-01T02:22:33Z", hiveiap_purchase_test="")
    p = purchase_from(TAG, raw)
    assert p.time_utc == datetime(2018, 5, 1, 2, 22, 33, tzinfo=UTC) and p.price == Decimal("1.99")
