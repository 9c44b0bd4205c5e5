"""A normalized Hive purchase in each vendor's own terms. Pure functions: no I/O, no clock.

Sources: the seeds, in Korean (``shared/seeds/``); where the English summary
differs, the seed wins.

* Hive (seed 003): ``product_price`` is what the user paid and quantity is
  fixed to 1, so the revenue a vendor gets is the price paid, whatever the
  quantity says (negative for a refund).
* AppsFlyer (seed 001): one event per request; ``eventValue`` is a JSON
  *string*; ``af_revenue`` is a plain number (a decimal point and a leading
  minus allowed, no separators, no currency); ``eventTime`` is UTC
  ``yyyy-MM-dd HH:mm:ss.SSS`` and is kept only if the event arrives before
  02:00 UTC on the day after its UTC date; iOS 14+ needs ``os``; ≤ 1 KB.
* Wisetracker (seed 000): ``SESSION`` (vtTz, _wtno, advtId, dSource, plat)
  plus ``REVENUE`` (vtTz, event w_purchase | w_first_purchase,
  transaction_id, currency, product {product_id, product_name, quantity,
  revenue}). vtTz is "required, current time" in both blocks: the send time in
  ms. plat is reserved text, "AOS" or "IOS" only.
* Naver (seed 002): ``value`` in KRW equals the sum of the items'
  ``payAmount`` (a line total); items need quantity and payAmount, ``ext1`` is
  the ISO 4217 currency; only KRW and USD count, and another currency's value
  is taken as 0: such a purchase goes as items without value.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from math import isfinite
from typing import Any

import orjson

from agent.hive import codes, spec
from agent.hive.records import EXTRA_KEY, REFUND_VALUES, refund_state
from agent.hive.times import utc_of

ID_FIELDS = ("appsflyer_id", "advertising_id", "idfa", "idfv", "att")
# Which identifiers belong to an install on which platform: a GAID is never an IDFA. An
# appsflyer_id names one install on any platform (it is looked up per app and platform).
PLATFORM_IDS = {
    "A": frozenset({"appsflyer_id", "advertising_id"}),
    "I": frozenset({"appsflyer_id", "idfa", "idfv", "att"}),
    "B": frozenset({"appsflyer_id"}),
    "W": frozenset({"appsflyer_id"}),
}
APPSFLYER_MAX_BYTES = 1024
_REVENUE = re.compile(r"-?\d+(\.\d+)?")
_OS_VERSION = re.compile(r"\d+(\.\d+)*")
# Apple's ATTrackingManager.AuthorizationStatus, as AppsFlyer's att takes it.
ATT_CODES = {"notDetermined": 0, "restricted": 1, "denied": 2, "authorized": 3}


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
    product_id: str | None
    product_name: str | None
    price: Decimal  # what the user paid (seed 003), whatever the quantity
    quantity: int
    currency: str
    time_utc: datetime
    uid: int | None = None
    extra_uid: str | None = None
    did: int | None = None
    client_ip: str | None = None
    os_version: str | None = None
    version: str | None = None
    language: str | None = None
    device_name: str | None = None
    test: bool = False
    refund: bool = False
    ids: dict[str, str] = field(default_factory=dict)  # identifiers the record itself carries

    @property
    def revenue(self) -> Decimal:
        """What the user paid; negative for a refund."""
        return -abs(self.price) if self.refund else self.price

    @property
    def customer_user_id(self) -> str | None:
        """The Hive uid, or the external channel's extra_uid when there is no uid."""
        for value in (self.uid, self.extra_uid):
            if value not in (None, ""):
                return str(value)
        return None


def game_of(tag: str) -> str:
    """``ha2union.game.<game>.purchase_log`` → ``<game>``."""
    parts = tag.split(".")
    return parts[2] if len(parts) > 3 else tag


def _text(value: object, name: str, limit: int) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise Refused("invalid", f"{name} {value!r:.80} is not a text of 1 to {limit} characters")
    return value


def _price(value: object) -> Decimal:
    """A number, or a plain decimal string (a record that no hive filter normalized)."""
    if isinstance(value, str) and _REVENUE.fullmatch(value.strip()):
        return Decimal(value.strip())
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not isfinite(value):
        raise Refused("invalid", f"product_price {value!r:.40} is not a number")
    return Decimal(str(value))


def att_code(value: object) -> int | None:
    """AppsFlyer's att (0-3) from a code or Apple's name for it; None for anything else."""
    if isinstance(value, str):
        value = ATT_CODES.get(value.strip(), value.strip())
        value = int(value) if isinstance(value, str) and value.isdigit() else value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 3:
        return value
    return None


def platform_ids(platform: str, ids: dict[str, str]) -> dict[str, str]:
    """Only the identifiers that belong to an install on this platform."""
    allowed = PLATFORM_IDS.get(platform, frozenset())
    return {k: v for k, v in ids.items() if k in allowed and v not in (None, "")}


def purchase_from(
    tag: str, record: dict[str, Any], *, refund_field: str = "refund", refund_values: tuple[Any, ...] = REFUND_VALUES
) -> Purchase:
    """What every mirror needs, from a record the hive filter normalized (or kept as sent,
    with warnings: the fields a vendor cannot do without are checked here)."""
    extra = record.get(EXTRA_KEY)
    # The spec's fields and the ones kept outside it never share a name: one dict for both.
    get = {**record, **extra}.get if isinstance(extra, dict) else record.get

    missing = [f for f in spec.MIRROR_FIELDS if get(f) in (None, "")]
    if missing:
        raise Refused("invalid", f"missing {', '.join(missing)}")
    platform = get("platform")
    if platform not in codes.PLATFORMS:
        raise Refused("invalid", f"platform {platform!r:.40} is not one of {codes.PLATFORMS}")
    currency = get("currency")
    if not (isinstance(currency, str) and codes.known_currency(currency)):
        raise Refused("invalid", f"currency {currency!r:.40} is not an ISO 4217 code")
    try:
        time_utc = _utc_of(get("purchase_time"), get("timezone"))
    except ValueError as exc:
        raise Refused("invalid_time", str(exc)) from None
    price = _price(get("product_price"))
    quantity = get("quantity")
    quantity = 1 if quantity is None else quantity  # the spec fixes it to 1
    refund_or_not = refund_state({refund_field: get(refund_field)}, refund_field, refund_values)
    if refund_or_not is None:
        raise Refused(
            "invalid", f"{refund_field} {get(refund_field)!r:.40} is neither a refund value nor a non-refund value"
        )
    refund = refund_or_not
    problem = spec.mirror_amount_problem(price, quantity, refund)
    if problem is not None:
        raise Refused("invalid", problem)
    test = get("hiveiap_purchase_test")
    ids = {k: v if k == "att" else _scalar_text(v, k) for k in ID_FIELDS if (v := get(k)) not in (None, "")}
    return Purchase(
        game=game_of(tag),
        app_id=_text(get("app_id"), "app_id", 200),
        platform=platform,
        transaction_id=_text(get("transaction_id"), "transaction_id", 512),
        product_id=_str_or_none(get("product_id"), "product_id"),
        product_name=_str_or_none(get("product_name"), "product_name"),
        price=price,
        quantity=quantity,
        currency=currency,
        time_utc=time_utc,
        uid=get("uid"),
        extra_uid=get("extra_uid"),
        did=get("did"),
        client_ip=_str_or_none(get("client_ip") or get("ip"), "client_ip"),
        os_version=_str_or_none(get("os_version"), "os_version"),
        version=_str_or_none(get("version"), "version"),
        language=_str_or_none(get("device_language") or get("language"), "language"),
        device_name=_str_or_none(get("device_name"), "device_name"),
        test=bool(test) and str(test).upper() not in ("N", "0", "FALSE"),
        refund=refund,
        ids=ids,
    )


@functools.lru_cache(maxsize=4096)
def _cached_utc_of(purchase_time: str, tz: str | None) -> datetime:
    return utc_of(purchase_time, tz)


def _utc_of(purchase_time: object, tz: object) -> datetime:
    """utc_of, remembered for the times and timezones just seen (purchases come in bursts)."""
    if isinstance(purchase_time, str) and (tz is None or isinstance(tz, str)):
        return _cached_utc_of(purchase_time, tz)
    return utc_of(purchase_time, tz)


def _str_or_none(value: object, name: str) -> str | None:
    return _scalar_text(value, name) if value not in (None, "") else None


def _scalar_text(value: object, name: str) -> str:
    """A text, or a number written as one. A map or a list (kept as sent in lenient mode) is no
    text: sent, it would reach the vendor as Python's repr of it."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise Refused("invalid", f"{name} is a {type(value).__name__} ({value!r:.60}), not a text")


def revenue_string(value: Decimal) -> str:
    """AppsFlyer's plain number: digits, an optional decimal part, an optional leading minus."""
    text = format(value.normalize(), "f") if value == value.to_integral() else format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text == "-0":
        text = "0"
    if not is_plain_revenue(text):
        raise Refused("invalid", f"revenue {text!r} is not a plain number")
    return text


def is_plain_revenue(text: str) -> bool:
    """The revenue form the AppsFlyer seed accepts: no thousands separators, units or exponent."""
    return bool(_REVENUE.fullmatch(text))


# -- AppsFlyer ------------------------------------------------------------------


def appsflyer_cutoff(event_utc: datetime) -> datetime:
    """The moment after which AppsFlyer stamps the event with its arrival time instead:
    02:00 UTC on the day after the event's UTC date."""
    day = event_utc.astimezone(UTC).date()
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1, hours=2)


def appsflyer_keeps_time(event_utc: datetime, arrival_utc: datetime) -> bool:
    """Does AppsFlyer keep eventTime for an event arriving at ``arrival_utc``?"""
    if event_utc > arrival_utc:  # a future time counts only on the same UTC date
        return event_utc.date() == arrival_utc.date()
    return arrival_utc < appsflyer_cutoff(event_utc)


def appsflyer_time(moment: datetime) -> str:
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%d %H:%M:%S.") + f"{utc.microsecond // 1000:03d}"


def appsflyer_event(p: Purchase, ids: dict[str, str], *, bundle_id: str | None = None) -> dict[str, Any]:
    """The body of ``POST /inappevent/{app_id}`` for one purchase (a refund: negative revenue).

    ``ids`` are the identifiers of this purchase's own platform (:func:`platform_ids`)."""
    appsflyer_id = ids.get("appsflyer_id")
    if not appsflyer_id:
        raise Refused("missing_identifier", f"no appsflyer_id for did {p.did} / uid {p.uid} of {p.game}")
    real_os = p.os_version is not None and _OS_VERSION.fullmatch(p.os_version.strip()) is not None
    if p.platform == "I" and not real_os:
        raise Refused("invalid", f"iOS purchase without an OS version ({p.os_version!r}): iOS 14+ requires os")
    value = {
        "af_revenue": revenue_string(p.revenue),
        "af_currency": p.currency,
        "af_quantity": str(-p.quantity if p.refund else p.quantity),
        "af_order_id": p.transaction_id,
    }
    if p.product_id:
        value["af_content_id"] = p.product_id
    body: dict[str, Any] = {
        "appsflyer_id": str(appsflyer_id),
        "eventName": "af_purchase",
        "eventValue": orjson.dumps(value).decode(),
        "eventCurrency": p.currency,
        "eventTime": appsflyer_time(p.time_utc),
    }
    if p.os_version:
        body["os"] = p.os_version.strip()
    if p.customer_user_id is not None:
        body["customer_user_id"] = p.customer_user_id
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
        att = att_code(ids.get("att"))
        if att is not None:
            body["att"] = att
    elif ids.get("advertising_id"):
        body["advertising_id"] = str(ids["advertising_id"])
    if len(orjson.dumps(body)) > APPSFLYER_MAX_BYTES:
        raise Refused("too_large", f"the AppsFlyer payload is over {APPSFLYER_MAX_BYTES} bytes")
    return body


# -- Wisetracker ----------------------------------------------------------------

WISETRACKER_PLATFORMS = {"A": "AOS", "I": "IOS"}  # "Reserved text": nothing else


def wisetracker_body(
    p: Purchase, ids: dict[str, str], *, service_number: int, send_ms: int, first: bool
) -> dict[str, Any]:
    """SESSION + REVENUE for one purchase. Refunds have no Wisetracker form.

    ``ids`` are the identifiers of this purchase's own platform (:func:`platform_ids`)."""
    if p.refund:
        raise Refused("unsupported_refund", "Wisetracker has no refund event")
    plat = WISETRACKER_PLATFORMS.get(p.platform)
    if plat is None:
        raise Refused("unsupported_platform", f"platform {p.platform!r} has no Wisetracker plat (AOS or IOS)")
    advt = ids.get("idfa") if p.platform == "I" else ids.get("advertising_id")
    if not advt:
        kind = "IDFA" if p.platform == "I" else "advertising id"
        raise Refused("missing_identifier", f"no {kind} for did {p.did} / uid {p.uid} of {p.game}")
    if not p.product_id:
        raise Refused("invalid", "missing product_id (Wisetracker's product needs it)")
    session = {"vtTz": send_ms, "_wtno": service_number, "advtId": str(advt), "dSource": "SDK", "plat": plat}
    if ids.get("idfv"):
        session["vendorId"] = str(ids["idfv"])
    if p.language:
        session["lng"] = p.language
    if p.device_name:
        session["phone"] = p.device_name
    if p.version:
        session["apVr"] = p.version
    revenue = {
        "vtTz": send_ms,
        "event": "w_first_purchase" if first else "w_purchase",
        "transaction_id": p.transaction_id,
        "currency": p.currency,
        "product": {
            "product_id": p.product_id,
            "product_name": p.product_name or p.product_id,
            "quantity": p.quantity,
            "revenue": _number(p.revenue),
        },
    }
    return {"SESSION": session, "REVENUE": revenue}


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral() else float(value)


# -- Naver ------------------------------------------------------------------------

NAVER_CURRENCIES = ("KRW", "USD")


@dataclass(slots=True)
class Item:
    quantity: int
    pay_amount: Decimal  # the line's total, as payAmount is
    id: str = ""
    name: str = ""


def naver_event(items: list[Item], currency: str, fx_to_krw: dict[str, float]) -> tuple[dict[str, Any], bool]:
    """The in-app purchase conversion event, and whether its currency is one Naver does not count.

    KRW: value = the sum of payAmount. USD: items only (Naver computes the value).
    Another currency converts to KRW through ``fx_to_krw``; without a rate it goes
    as items in its own currency and no value (Naver counts it as 0; a value would
    contradict the sum of payAmount).
    """
    if not items:
        raise Refused("invalid", "a purchase without items")
    rate: Decimal | None = None
    if currency not in NAVER_CURRENCIES:
        known = fx_to_krw.get(currency)
        if known is not None:
            rate = Decimal(str(known))
    body_items = []
    for item in items:
        pay, item_currency = item.pay_amount, currency
        if rate is not None:
            pay, item_currency = (pay * rate).quantize(Decimal(1)), "KRW"
        entry = {"quantity": item.quantity, "payAmount": float(pay), "ext1": item_currency}
        if item.id:
            entry["id"] = item.id
        if item.name:
            entry["name"] = item.name
        body_items.append(entry)
    event: dict[str, Any] = {"event": "inAppPurchase", "items": body_items}
    if currency == "KRW" or rate is not None:
        event["value"] = float(sum(Decimal(str(i["payAmount"])) for i in body_items))
    validate_naver(event)
    return event, currency not in NAVER_CURRENCIES and rate is None


def validate_naver(event: dict[str, Any]) -> None:
    """The documented rules: integer quantity ≥ 1, numeric payAmount, a value in KRW equal to the sum."""
    for item in event["items"]:
        if not isinstance(item["quantity"], int) or item["quantity"] < 1:
            raise Refused("invalid", f"item quantity {item['quantity']!r} is not an integer ≥ 1")
        if not isinstance(item["payAmount"], (int, float)):
            raise Refused("invalid", "payAmount is not a number")
    if "value" in event:
        if {i.get("ext1", "KRW") for i in event["items"]} != {"KRW"}:
            raise Refused("invalid", "a value is in KRW, and so must every item be")
        total = sum(Decimal(str(i["payAmount"])) for i in event["items"])
        if Decimal(str(event["value"])) != total:
            raise Refused("invalid", f"value {event['value']} is not the sum of payAmount {total}")


def naver_items(p: Purchase) -> list[Item]:
    """One line: the product, the quantity, and what the user paid for it."""
    return [Item(p.quantity, p.price, p.product_id or "", p.product_name or "")]
