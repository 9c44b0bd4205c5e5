"""A normalized Hive purchase in each vendor's own terms. Pure functions: no I/O, no clock.

Sources (the seeds, in Korean; English summaries in docs/HIVE_AND_VENDORS.md §2–5):

* AppsFlyer S2S in-app events: one event per request; ``eventValue`` is a JSON
  *string*; ``af_revenue`` is a plain number (a decimal point and a leading
  minus allowed, no separators, no currency); ``eventTime`` is UTC
  ``yyyy-MM-dd HH:mm:ss.SSS`` and is kept only if the event arrives before
  02:00 UTC on the day after its UTC date; ``os`` must be sent; payload ≤ 1 KB.
* Wisetracker S2S: ``SESSION`` (vtTz ms, _wtno, advtId, dSource, plat) plus
  ``REVENUE`` (vtTz, event w_purchase | w_first_purchase, transaction_id,
  currency, product {product_id, product_name, quantity, revenue}); a request
  without an event block is ignored by the server, so it is never built.
* Naver in-app purchase conversion: ``value`` in KRW equals the sum of the
  items' ``payAmount`` (a line total: price × quantity); items need quantity
  and payAmount, ``ext1`` is the ISO 4217 currency; only KRW and USD count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation

import orjson

from agent.filters.hive import EXTRA_KEY  # where the hive filter keeps the fields outside the spec
from agent.hive.purchase_log import KST, parse_timezone

ID_FIELDS = ("appsflyer_id", "advertising_id", "idfa", "idfv", "att")
APPSFLYER_MAX_BYTES = 1024
_REVENUE = re.compile(r"-?\d+(\.\d+)?")
PLATFORMS = {"A": "android", "I": "ios", "W": "windows"}


class Refused(Exception):
    """This purchase cannot go to this vendor; ``reason`` (``code: detail``) goes to the dead letter."""

    def __init__(self, code: str, detail: str = ""):
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code


@dataclass(slots=True)
class Purchase:
    game: str
    app_id: str
    platform: str
    transaction_id: str
    product_id: str
    product_name: str
    price: Decimal
    quantity: int
    currency: str
    time_utc: datetime
    uid: int | None = None
    did: int | None = None
    client_ip: str | None = None
    os_version: str | None = None
    version: str | None = None
    language: str | None = None
    device_name: str | None = None
    test: bool = False
    refund: bool = False
    ids: dict = field(default_factory=dict)  # identifiers the record itself carries

    @property
    def revenue(self) -> Decimal:
        """The line total; negative for a refund."""
        total = self.price * self.quantity
        return -abs(total) if self.refund else total


def game_of(tag: str) -> str:
    """``ha2union.game.<game>.purchase_log`` → ``<game>``."""
    parts = tag.split(".")
    return parts[2] if len(parts) > 3 else tag


def purchase_from(tag: str, record: dict, *, refund_field: str = "refund",
                  refund_values: tuple = (True, 1, "1", "Y", "y", "true")) -> Purchase:
    """The fields every mirror needs, from a record the hive filter normalized."""
    extra = record.get(EXTRA_KEY) or {}

    def get(name):
        value = record.get(name)
        return extra.get(name) if value is None else value

    missing = [f for f in ("app_id", "platform", "transaction_id", "product_id", "product_price", "currency",
                           "purchase_time") if get(f) in (None, "")]
    if missing:
        raise Refused("invalid", f"missing {', '.join(missing)}")
    try:
        price = Decimal(str(get("product_price")))
    except InvalidOperation:
        raise Refused("invalid", f"product_price {get('product_price')!r} is not a number") from None
    quantity = get("quantity")
    quantity = 1 if quantity in (None, "") else int(quantity)
    test = get("hiveiap_purchase_test")
    ids = {k: extra.get(k, record.get(k)) for k in ID_FIELDS if extra.get(k, record.get(k)) not in (None, "")}
    return Purchase(
        game=game_of(tag), app_id=str(get("app_id")), platform=str(get("platform")).upper(),
        transaction_id=str(get("transaction_id")), product_id=str(get("product_id")),
        product_name=str(get("product_name") or ""), price=price, quantity=quantity,
        currency=str(get("currency")).upper(),
        time_utc=purchase_time_utc(str(get("purchase_time")), get("timezone")),
        uid=get("uid"), did=get("did"), client_ip=get("client_ip") or get("ip"), os_version=get("os_version"),
        version=get("version"), language=get("device_language") or get("language"),
        device_name=get("device_name"), test=bool(test) and str(test).upper() not in ("N", "0", "FALSE"),
        refund=get(refund_field) in refund_values, ids=ids)


def purchase_time_utc(local: str, tz: str | None) -> datetime:
    """purchase_time ("yyyy-mm-dd hh:mm:ss" in the record's timezone, KST when none) → aware UTC."""
    text = local.strip()
    try:  # the hive filter wrote it as "yyyy-mm-dd hh:mm:ss"; slicing is ten times cheaper than strptime
        if len(text) != 19 or text[4] != "-" or text[7] != "-" or text[13] != ":" or text[16] != ":":
            raise ValueError
        naive = datetime(int(text[0:4]), int(text[5:7]), int(text[8:10]), int(text[11:13]), int(text[14:16]),
                         int(text[17:19]))
    except ValueError:
        raise Refused("invalid", f"purchase_time {local!r}") from None
    offset = parse_timezone(tz) if tz else None
    if offset is None:
        offset = parse_timezone(KST)
    return naive.replace(tzinfo=timezone(offset)).astimezone(timezone.utc)


def revenue_string(value: Decimal) -> str:
    """AppsFlyer's plain number: digits, an optional decimal part, an optional leading minus."""
    text = format(value.normalize(), "f") if value == value.to_integral() else format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text == "-0":
        text = "0"
    if not _REVENUE.fullmatch(text):
        raise Refused("invalid", f"revenue {text!r} is not a plain number")
    return text


def is_plain_revenue(text: str) -> bool:
    return bool(_REVENUE.fullmatch(text))


# -- AppsFlyer ------------------------------------------------------------------

def appsflyer_cutoff(event_utc: datetime) -> datetime:
    """The moment after which AppsFlyer stamps the event with its arrival time instead:
    02:00 UTC on the day after the event's UTC date."""
    day = event_utc.astimezone(timezone.utc).date()
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(days=1, hours=2)


def appsflyer_keeps_time(event_utc: datetime, arrival_utc: datetime) -> bool:
    """Does AppsFlyer keep eventTime for an event arriving at ``arrival_utc``?"""
    if event_utc > arrival_utc:  # a future time counts only on the same UTC date
        return event_utc.date() == arrival_utc.date()
    return arrival_utc < appsflyer_cutoff(event_utc)


def appsflyer_time(moment: datetime) -> str:
    utc = moment.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%d %H:%M:%S.") + f"{utc.microsecond // 1000:03d}"


def appsflyer_event(p: Purchase, ids: dict, *, bundle_id: str | None = None) -> dict:
    """The body of ``POST /inappevent/{app_id}`` for one purchase (a refund: negative revenue)."""
    appsflyer_id = ids.get("appsflyer_id")
    if not appsflyer_id:
        raise Refused("missing_identifier", f"no appsflyer_id for did {p.did} / uid {p.uid} of {p.game}")
    value = {"af_revenue": revenue_string(p.revenue), "af_currency": p.currency, "af_content_id": p.product_id,
             "af_quantity": str(-p.quantity if p.refund else p.quantity), "af_order_id": p.transaction_id}
    body = {"appsflyer_id": str(appsflyer_id), "eventName": "af_purchase",
            "eventValue": orjson.dumps(value).decode(), "eventCurrency": p.currency,
            "eventTime": appsflyer_time(p.time_utc), "os": p.os_version or "unknown"}
    if p.uid is not None:
        body["customer_user_id"] = str(p.uid)
    if p.client_ip:
        body["ip"] = p.client_ip
    if bundle_id:
        body["bundleIdentifier"] = bundle_id
    if p.version:
        body["app_version_name"] = p.version
    if p.platform == "I":
        for k in ("idfa", "idfv"):
            if ids.get(k):
                body[k] = str(ids[k])
        if ids.get("att") not in (None, ""):
            body["att"] = int(ids["att"])
    elif ids.get("advertising_id"):
        body["advertising_id"] = str(ids["advertising_id"])
    if len(orjson.dumps(body)) > APPSFLYER_MAX_BYTES:
        raise Refused("too_large", f"the AppsFlyer payload is over {APPSFLYER_MAX_BYTES} bytes")
    return body


# -- Wisetracker ----------------------------------------------------------------

WISETRACKER_PLATFORMS = {"A": "AOS", "I": "IOS", "W": "PC"}


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def wisetracker_body(p: Purchase, ids: dict, *, service_number: int, send_ms: int, first: bool) -> dict:
    """SESSION + REVENUE for one purchase. Refunds have no Wisetracker form."""
    if p.refund:
        raise Refused("unsupported_refund", "Wisetracker has no refund event")
    plat = WISETRACKER_PLATFORMS.get(p.platform)
    if plat is None:
        raise Refused("unsupported_platform", f"platform {p.platform!r} has no Wisetracker plat")
    advt = ids.get("advertising_id") if p.platform != "I" else ids.get("idfa")
    advt = advt or ids.get("advertising_id") or ids.get("idfa")
    if not advt:
        raise Refused("missing_identifier", f"no advertising id for did {p.did} / uid {p.uid} of {p.game}")
    session = {"vtTz": send_ms, "_wtno": service_number, "advtId": str(advt), "dSource": "SDK", "plat": plat}
    if ids.get("idfv"):
        session["vendorId"] = str(ids["idfv"])
    if p.language:
        session["lng"] = p.language
    if p.device_name:
        session["phone"] = p.device_name
    if p.version:
        session["apVr"] = p.version
    revenue = {"vtTz": _ms(p.time_utc), "event": "w_first_purchase" if first else "w_purchase",
               "transaction_id": p.transaction_id, "currency": p.currency,
               "product": {"product_id": p.product_id, "product_name": p.product_name, "quantity": p.quantity,
                           "revenue": _number(p.price * p.quantity)}}
    return {"SESSION": session, "REVENUE": revenue}


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral() else float(value)


# -- Naver ------------------------------------------------------------------------

NAVER_CURRENCIES = ("KRW", "USD")


@dataclass(slots=True)
class Item:
    quantity: int
    price: Decimal
    id: str = ""
    name: str = ""


def naver_event(items: list[Item], currency: str, fx_to_krw: dict[str, float]) -> tuple[dict, bool]:
    """The in-app purchase conversion event, and whether its currency is unsupported (value 0).

    KRW: value = the sum of payAmount. USD: items only (Naver computes the
    value). Another currency converts to KRW through ``fx_to_krw``, or is sent
    with value 0.
    """
    if not items:
        raise Refused("invalid", "a purchase without items")
    rate = None
    if currency not in NAVER_CURRENCIES:
        rate = fx_to_krw.get(currency)
        if rate is not None:
            rate = Decimal(str(rate))
    body_items = []
    for item in items:
        pay = item.price * item.quantity
        item_currency = currency
        if rate is not None:
            pay, item_currency = (pay * rate).quantize(Decimal(1)), "KRW"
        entry = {"quantity": item.quantity, "payAmount": float(pay), "ext1": item_currency}
        if item.id:
            entry["id"] = item.id
        if item.name:
            entry["name"] = item.name
        body_items.append(entry)
    event = {"event": "inAppPurchase", "items": body_items}
    unsupported = currency not in NAVER_CURRENCIES and rate is None
    if currency == "KRW" or rate is not None:
        event["value"] = float(sum(Decimal(str(i["payAmount"])) for i in body_items))
    elif unsupported:
        event["value"] = 0.0
    validate_naver(event, unsupported)
    return event, unsupported


def validate_naver(event: dict, unsupported: bool = False) -> None:
    """The documented rules: integer quantity ≥ 1, numeric payAmount, value = the sum, KRW or USD."""
    for item in event["items"]:
        if not isinstance(item["quantity"], int) or item["quantity"] < 1:
            raise Refused("invalid", f"item quantity {item['quantity']!r} is not an integer ≥ 1")
        if not isinstance(item["payAmount"], (int, float)):
            raise Refused("invalid", "payAmount is not a number")
        if item.get("ext1", "KRW") not in NAVER_CURRENCIES and not unsupported:
            raise Refused("invalid", f"currency {item['ext1']} is not KRW or USD")
    if "value" in event and not unsupported:
        total = sum(Decimal(str(i["payAmount"])) for i in event["items"])
        if Decimal(str(event["value"])) != total:
            raise Refused("invalid", f"value {event['value']} is not the sum of payAmount {total}")


def naver_items(p: Purchase) -> list[Item]:
    return [Item(p.quantity, p.price, p.product_id, p.product_name)]
