"""The vendor fakes hold the seeds' contracts exactly: the seeds' own examples pass, and what the
seeds forbid gets a 400 (never a 500), so the mirror tests mean what they say."""

import json
import urllib.error
import urllib.request

import pytest

from tests.fakes.vendors import FakeAppsFlyer, FakeNaverRelay, FakeWisetracker

WT_SESSION = {
    "vtTz": 1620693013341,
    "_wtno": 1234,
    "advtId": "12D9505B-A48E-410A-8787-75BF39DA82F5",
    "dSource": "SDK",
    "plat": "IOS",
}
# Seed 000's examples, as printed (vtTz filled in where the seed writes <unix time>).
WT_GOAL = {"SESSION": WT_SESSION, "GOAL": {"vtTz": 1620693013341, "signupTp": "email", "event": "w_signup_complete"}}
WT_PRODUCT = {"product_id": "2007291158", "product_name": "Leia Pleats Bag Black", "quantity": 2, "revenue": 566200}
WT_REVENUE = {
    "SESSION": WT_SESSION,
    "REVENUE": {
        "vtTz": 1620702642346,
        "event": "w_purchase",
        "transaction_id": "TR2020111129424",
        "currency": "KRW",
        "product": WT_PRODUCT,
    },
}
WT_REVENUE_LIST = {
    "SESSION": WT_SESSION,
    "REVENUE": {
        **WT_REVENUE["REVENUE"],
        "product": [
            WT_PRODUCT,
            {"product_id": "2007291159", "product_name": "Leia Pleats Bag Blue", "quantity": 1, "revenue": 1566200},
        ],
    },
}


def post(url: str, body, headers: dict) -> int:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def with_(body: dict, block: str, **changes) -> dict:
    return {**body, block: {**body[block], **changes}}


@pytest.mark.parametrize(
    "body,status",
    [
        (WT_GOAL, 200),
        (WT_REVENUE, 200),
        (WT_REVENUE_LIST, 200),
        (with_(WT_REVENUE, "SESSION", plat="PC"), 400),  # "AOS" or "IOS": reserved text
        (with_(WT_REVENUE, "SESSION", vtTz=1620693013), 400),  # seconds, not ms
        (with_(WT_REVENUE, "REVENUE", vtTz="1620702642346"), 400),
        (with_(WT_REVENUE, "REVENUE", product={**WT_PRODUCT, "product_name": None}), 400),
        (with_(WT_REVENUE, "REVENUE", event="purchase"), 400),
        (with_(WT_REVENUE, "SESSION", dSource="App"), 400),
        (b"{not json", 400),
        ([1, 2], 400),
    ],
)
def test_wisetracker_fake(body, status):
    with FakeWisetracker({1234: "tok"}) as wt:
        assert post(f"{wt.url}/s2s/v1/s2sDataRcv.do", body, {"authToken": "tok"}) == status
        assert post(f"{wt.url}/s2s/v1/s2sDataRcv.do", WT_REVENUE, {"authToken": "wrong"}) == 401


AF_EVENT = {
    "appsflyer_id": "1525416000000-1234567",
    "eventName": "af_purchase",
    "eventValue": json.dumps({"af_revenue": "-123.45", "af_currency": "USD"}),
}


@pytest.mark.parametrize(
    "app,body,status",
    [
        ("com.game", AF_EVENT, 200),  # eventTime, os, eventCurrency: optional
        ("com.game", {**AF_EVENT, "eventTime": "2026-11-25 01:02:03.456"}, 200),
        ("com.game", {**AF_EVENT, "eventTime": "2026-11-25T01:02:03Z"}, 400),
        ("id1234567", AF_EVENT, 400),  # iOS 14+: os is required
        ("id1234567", {**AF_EVENT, "os": "17.4"}, 200),
        ("com.game", {**AF_EVENT, "eventValue": {"af_revenue": "1"}}, 400),  # not stringified: 400, not 500
        ("com.game", {**AF_EVENT, "eventValue": json.dumps({"af_revenue": "1,234.56"})}, 400),
        ("com.game", {k: v for k, v in AF_EVENT.items() if k != "appsflyer_id"}, 400),
        ("com.game", b"[", 400),
    ],
)
def test_appsflyer_fake(app, body, status):
    with FakeAppsFlyer({app: "tok"}) as af:
        assert post(f"{af.url}/inappevent/{app}", body, {"authentication": "tok"}) == status


ITEMS = [
    {"quantity": 1, "payAmount": 100.0, "ext1": "KRW"},
    {"quantity": 2, "payAmount": 400.0, "ext1": "KRW"},
    {"quantity": 3, "payAmount": 900.0, "ext1": "KRW"},
]


@pytest.mark.parametrize(
    "body,status",
    [
        ({"event": "inAppPurchase", "items": ITEMS, "value": 1400.0}, 200),  # seed 002's table
        ({"event": "inAppPurchase", "items": ITEMS}, 200),
        ({"event": "inAppPurchase", "items": [{"quantity": 1, "payAmount": 1.99, "ext1": "USD"}]}, 200),
        ({"event": "inAppPurchase", "items": [{"quantity": 1, "payAmount": 5.0, "ext1": "EUR"}]}, 200),  # counts 0
        ({"event": "inAppPurchase", "items": ITEMS, "value": 1300.0}, 400),
        ({"event": "inAppPurchase", "items": [{"quantity": 1, "payAmount": 5.0, "ext1": "EUR"}], "value": 5.0}, 400),
        ({"event": "inAppPurchase", "items": [{"quantity": 0, "payAmount": 5.0}]}, 400),
        ({"event": "inAppPurchase", "items": []}, 400),
        ({"event": "inAppPurchase", "value": 1400}, 200),  # seed 002: trackPurchaseEvent(value: 1_400)
        ({"event": "inAppPurchase", "value": "1400"}, 400),
        ({"event": "inAppPurchase"}, 400),
        ([], 400),
    ],
)
def test_naver_relay_fake(body, status):
    with FakeNaverRelay() as nv:
        assert post(f"{nv.url}/naver", body, {}) == status
