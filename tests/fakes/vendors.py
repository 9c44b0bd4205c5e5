"""Local AppsFlyer, Wisetracker and Naver-relay servers that enforce the documented contracts.

Each refuses exactly what the seeds (``shared/seeds/``) say the real one
would: not stricter, not looser. A malformed request gets 400, never 500.

* AppsFlyer (seed 001): ``POST /inappevent/{app_id}``, header
  ``authentication`` (401 if wrong), JSON ≤ 1 KB with ``appsflyer_id``,
  ``eventName`` and ``eventValue`` as a JSON *string* whose ``af_revenue`` is a
  plain number. ``eventTime`` is optional (the arrival time stands in), as
  ``yyyy-MM-dd HH:mm:ss.SSS`` when sent; ``os`` is required for iOS apps
  (``id`` + digits) only.
* Wisetracker (seed 000): ``POST /s2s/v1/s2sDataRcv.do``, header ``authToken``;
  ``SESSION`` with vtTz (ms), _wtno (int), advtId, dSource ("SDK" or
  "Website") and plat ("AOS" or "IOS"); ``REVENUE`` with vtTz (ms), event,
  transaction_id, currency and product(s) {product_id, product_name, quantity,
  revenue}, or ``GOAL`` with vtTz and event. A request with no event block gets
  no answer at all.
* Naver relay (seed 002): an inAppPurchase with items of integer quantity ≥ 1
  and numeric payAmount; a value, when sent with items, is KRW and equals their sum; a
  value alone (``trackPurchaseEvent(value: 1_400)``) is taken.
  Items in a currency other than KRW and USD are taken (Naver counts them 0).

``script`` holds behaviours consumed one per request: an HTTP status,
(status, body), ("delay", seconds) or "ok"; ``delay`` delays every answer. ``events`` lists
what was accepted, ``(app, transaction_id, body)``, once per accepted request.
"""

from __future__ import annotations

import asyncio
import json
import re

from aiohttp import web

from tests.fakes.server import ThreadedServer

PLAIN_NUMBER = re.compile(r"-?\d+(\.\d+)?")
AF_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}")


def _ms(value) -> bool:
    """A Unix time in milliseconds (13 digits), as vtTz is."""
    return isinstance(value, int) and not isinstance(value, bool) and 10**12 <= value < 10**13


class FakeVendor(ThreadedServer):
    path = "/"

    def __init__(self, tokens: dict | None = None, script=(), delay: float = 0.0):
        super().__init__()
        self.tokens = tokens or {}
        self.script = list(script)
        self.delay = delay
        self.events: list[tuple[str, str, dict]] = []
        self.refusals: list[tuple[int, str]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    def transaction_ids(self) -> list[str]:
        return [txn for _, txn, _ in self.events]

    def routes(self, app: web.Application) -> None:
        app.router.add_post(self.path, self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            behaviour = self.script.pop(0) if self.script else "ok"
            if self.delay:
                await asyncio.sleep(self.delay)
            if isinstance(behaviour, tuple) and behaviour[0] == "delay":
                await asyncio.sleep(behaviour[1])
                behaviour = "ok"
            if isinstance(behaviour, tuple) and isinstance(behaviour[0], int):  # (status, body)
                self.refusals.append(behaviour)
                return web.Response(status=behaviour[0], text=behaviour[1])
            if isinstance(behaviour, int):
                self.refusals.append((behaviour, "scripted"))
                return web.Response(status=behaviour, text=f"scripted {behaviour}")
            if not request.headers.get("Content-Type", "").startswith("application/json"):
                return self._refuse(400, "Content-Type must be application/json")
            raw = await request.read()
            try:
                body = json.loads(raw)
            except ValueError:
                return self._refuse(400, "body is not JSON")
            return await self.check(request, raw, body)
        finally:
            self.in_flight -= 1

    async def check(self, request: web.Request, raw: bytes, body) -> web.Response:
        raise NotImplementedError

    def _refuse(self, status: int, reason: str) -> web.Response:
        self.refusals.append((status, reason))
        return web.Response(status=status, text=reason)

    def _accept(self, app: str, txn: str, body: dict, response: web.Response) -> web.Response:
        self.events.append((app, txn, body))
        return response


class FakeAppsFlyer(FakeVendor):
    path = "/inappevent/{app_id}"

    async def check(self, request, raw, body):
        app_id = request.match_info["app_id"]
        if self.tokens.get(app_id) != request.headers.get("authentication"):
            return self._refuse(401, "Unauthorized")
        if len(raw) > 1024:
            return self._refuse(400, "payload larger than 1KB")
        if not isinstance(body, dict) or not body.get("appsflyer_id"):
            return self._refuse(400, "appsflyer_id is missing")
        for key in ("eventName", "eventValue"):
            if key not in body:
                return self._refuse(400, f"{key} is missing")
        if re.fullmatch(r"id\d+", app_id) and not body.get("os"):
            return self._refuse(400, "os is required for iOS 14+")
        if not isinstance(body["eventValue"], str):
            return self._refuse(400, "eventValue must be a JSON string")
        try:
            value = json.loads(body["eventValue"]) if body["eventValue"] else {}
        except ValueError:
            return self._refuse(400, "eventValue is not JSON")
        if not isinstance(value, dict) or not PLAIN_NUMBER.fullmatch(str(value.get("af_revenue", "0"))):
            return self._refuse(400, f"af_revenue {value.get('af_revenue')!r} is not a plain number")
        if "eventTime" in body and not AF_TIME.fullmatch(str(body["eventTime"])):
            return self._refuse(400, "eventTime is not yyyy-MM-dd HH:mm:ss.SSS")
        return self._accept(app_id, value.get("af_order_id", ""), body, web.Response(text="ok"))


class FakeWisetracker(FakeVendor):
    path = "/s2s/v1/s2sDataRcv.do"

    async def check(self, request, raw, body):
        session = body.get("SESSION") if isinstance(body, dict) else None
        if not isinstance(session, dict):
            return self._refuse(400, "no SESSION")
        service = session.get("_wtno")
        if not isinstance(service, int) or self.tokens.get(service) != request.headers.get("authToken"):
            return self._refuse(401, "bad authToken for _wtno")
        if "REVENUE" not in body and "GOAL" not in body:
            await asyncio.sleep(3600)  # "a request with only SESSION is ignored and gets no response"
        if not _ms(session.get("vtTz")) or not isinstance(session.get("advtId"), str) or not session["advtId"]:
            return self._refuse(400, "SESSION.vtTz (ms) and advtId are required")
        if session.get("dSource") not in ("SDK", "Website") or session.get("plat") not in ("AOS", "IOS"):
            return self._refuse(400, "SESSION.dSource (SDK, Website) or plat (AOS, IOS)")
        if "GOAL" in body:
            goal = body["GOAL"]
            if not isinstance(goal, dict) or not _ms(goal.get("vtTz")) or not isinstance(goal.get("event"), str):
                return self._refuse(400, "GOAL.vtTz (ms) and event are required")
            return self._accept(str(service), "", body, web.json_response({"result": "ok"}))
        revenue = body["REVENUE"]
        if (
            not isinstance(revenue, dict)
            or not _ms(revenue.get("vtTz"))
            or revenue.get("event") not in ("w_purchase", "w_first_purchase")
        ):
            return self._refuse(400, "REVENUE.vtTz (ms) or event")
        for key in ("transaction_id", "currency"):
            if not isinstance(revenue.get(key), str):
                return self._refuse(400, f"REVENUE.{key}")
        products = revenue.get("product")
        for product in products if isinstance(products, list) else [products]:
            if (
                not isinstance(product, dict)
                or not isinstance(product.get("quantity"), int)
                or isinstance(product.get("revenue"), bool)
                or not isinstance(product.get("revenue"), (int, float))
                or not isinstance(product.get("product_id"), str)
                or not isinstance(product.get("product_name"), str)
            ):
                return self._refuse(400, "REVENUE.product needs product_id, product_name, quantity and revenue")
        return self._accept(str(service), revenue["transaction_id"], body, web.json_response({"result": "ok"}))


class FakeNaverRelay(FakeVendor):
    path = "/naver"

    async def check(self, request, raw, body):
        if self.tokens and request.headers.get("Authorization") not in {f"Bearer {t}" for t in self.tokens.values()}:
            return self._refuse(401, "Unauthorized")
        if not isinstance(body, dict) or body.get("event") != "inAppPurchase":
            return self._refuse(400, "an inAppPurchase event")
        items = body.get("items")
        if items is None and "value" in body:  # seed 002: trackPurchaseEvent(value: 1_400), no items
            if isinstance(body["value"], bool) or not isinstance(body["value"], (int, float)):
                return self._refuse(400, "value is not a number")
            return self._accept(body.get("app_id", ""), body.get("transaction_id", ""), body, web.json_response({}))
        if not isinstance(items, list) or not items:
            return self._refuse(400, "an inAppPurchase event with items, or a value")
        total = 0.0
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("quantity"), int) or item["quantity"] < 1:
                return self._refuse(400, "item quantity")
            if isinstance(item.get("payAmount"), bool) or not isinstance(item.get("payAmount"), (int, float)):
                return self._refuse(400, "item payAmount")
            total += item["payAmount"]
        if "value" in body:
            if not isinstance(body["value"], (int, float)) or abs(body["value"] - total) > 1e-6:
                return self._refuse(400, "value is not the sum of payAmount")
            if {item.get("ext1", "KRW") for item in items} != {"KRW"}:
                return self._refuse(400, "value is KRW, and so must the items be")
        return self._accept(body.get("app_id", ""), body.get("transaction_id", ""), body, web.json_response({}))
