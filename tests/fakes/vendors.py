"""Local AppsFlyer, Wisetracker and Naver-relay servers that enforce the documented contracts.

Each refuses what the real one would (docs/HIVE_AND_VENDORS.md §2–4, the seeds):

* AppsFlyer: ``POST /inappevent/{app_id}``, header ``authentication`` (401 if
  wrong), JSON ≤ 1 KB with ``appsflyer_id``, ``eventName``, ``eventValue`` as a
  JSON *string* whose ``af_revenue`` is a plain number, ``eventTime`` as
  ``yyyy-MM-dd HH:mm:ss.SSS``, and ``os``.
* Wisetracker: ``POST /s2s/v1/s2sDataRcv.do``, header ``authToken``, ``SESSION``
  with vtTz (ms), _wtno (int), advtId, dSource, plat, and ``REVENUE`` with the
  product fields; a request with no event block gets no answer at all.
* Naver relay: ``POST /naver``, items with integer quantity ≥ 1 and numeric
  payAmount; value equal to their sum; KRW or USD (or value 0).

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
        for key in ("eventName", "eventValue", "eventTime", "os", "eventCurrency"):
            if key not in body:
                return self._refuse(400, f"{key} is missing")
        if not isinstance(body["eventValue"], str):
            return self._refuse(500, "check the eventValue JSON is stringified")
        value = json.loads(body["eventValue"]) if body["eventValue"] else {}
        if not PLAIN_NUMBER.fullmatch(str(value.get("af_revenue", "0"))):
            return self._refuse(400, f"af_revenue {value.get('af_revenue')!r} is not a plain number")
        if not AF_TIME.fullmatch(body["eventTime"]):
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
        for key, kind in (("vtTz", int), ("advtId", str)):
            if not isinstance(session.get(key), kind):
                return self._refuse(400, f"SESSION.{key}")
        if session.get("dSource") not in ("SDK", "Website") or session.get("plat") not in ("AOS", "IOS", "PC"):
            return self._refuse(400, "SESSION.dSource or plat")
        revenue = body["REVENUE"]
        if not isinstance(revenue.get("vtTz"), int) or revenue.get("event") not in ("w_purchase", "w_first_purchase"):
            return self._refuse(400, "REVENUE.vtTz or event")
        for key in ("transaction_id", "currency"):
            if not isinstance(revenue.get(key), str):
                return self._refuse(400, f"REVENUE.{key}")
        products = revenue.get("product")
        for product in products if isinstance(products, list) else [products]:
            if not isinstance(product, dict) or not isinstance(product.get("quantity"), int) \
                    or not isinstance(product.get("revenue"), (int, float)) or "product_id" not in product:
                return self._refuse(400, "REVENUE.product")
        return self._accept(str(service), revenue["transaction_id"], body, web.json_response({"result": "ok"}))


class FakeNaverRelay(FakeVendor):
    path = "/naver"

    async def check(self, request, raw, body):
        if self.tokens and request.headers.get("Authorization") not in {f"Bearer {t}" for t in self.tokens.values()}:
            return self._refuse(401, "Unauthorized")
        items = body.get("items")
        if body.get("event") != "inAppPurchase" or not isinstance(items, list) or not items:
            return self._refuse(400, "an inAppPurchase event with items")
        total = 0.0
        for item in items:
            if not isinstance(item.get("quantity"), int) or item["quantity"] < 1:
                return self._refuse(400, "item quantity")
            if not isinstance(item.get("payAmount"), (int, float)):
                return self._refuse(400, "item payAmount")
            total += item["payAmount"]
        currencies = {item.get("ext1", "KRW") for item in items}
        if "value" in body:
            if body["value"] != 0 and abs(body["value"] - total) > 1e-6:
                return self._refuse(400, "value is not the sum of payAmount")
            if body["value"] != 0 and currencies != {"KRW"}:
                return self._refuse(400, "value is KRW")
        elif currencies - {"KRW", "USD"}:
            return self._refuse(400, "only KRW and USD")
        return self._accept(body.get("app_id", ""), body.get("transaction_id", ""), body, web.json_response({}))
