"""A local Hive HTTP collector that enforces the documented contract and fails on demand.

Contract (HIVE_AND_VENDORS.md §1.2, H2): POST /v1/server-recv, JSON body
{"appId": str, "logBody": [record, ...]}, optionally gzip'd
(Content-Encoding: gzip); every record has category, dateTime and guid.
A request that breaks it gets 400 with the reason. ``script`` is a list of
behaviours consumed one per request: an HTTP status, ("delay", seconds), or
"ok"; when it is empty every request is accepted.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re

from aiohttp import web

from tests.fakes.server import ThreadedServer

DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}")


class FakeHiveHttp(ThreadedServer):
    def __init__(self, script=()):
        super().__init__()
        self.script = list(script)
        self.records: list[dict] = []
        self.requests: list[tuple[int, str]] = []  # (status answered, app id)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/server-recv", self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        behaviour = self.script.pop(0) if self.script else "ok"
        if isinstance(behaviour, tuple) and behaviour[0] == "delay":
            await asyncio.sleep(behaviour[1])
            behaviour = "ok"
        if isinstance(behaviour, int):
            self.requests.append((behaviour, ""))
            return web.Response(status=behaviour, text=f"scripted {behaviour}")
        raw = await request.read()
        if request.headers.get("Content-Encoding") == "gzip" and raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)  # (aiohttp may have inflated it already)
        if not request.headers.get("Content-Type", "").startswith("application/json"):
            return self._refuse("Content-Type must be application/json")
        try:
            body = json.loads(raw)
        except ValueError:
            return self._refuse("body is not JSON")
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("appId"), str)
            or not isinstance(body.get("logBody"), list)
        ):
            return self._refuse("body must be {appId: str, logBody: [...]}")
        for record in body["logBody"]:
            for key in ("category", "dateTime", "guid"):
                if not record.get(key):
                    return self._refuse(f"record without {key}")
            if not DATE_TIME.match(record["dateTime"]):
                return self._refuse("dateTime is not YYYY-MM-DD HH:mm:SS")
            if "_extra" in record or "appsflyer_id" in record:
                return self._refuse("fields outside the spec")
        self.records.extend(body["logBody"])
        self.requests.append((200, body["appId"]))
        return web.json_response({"result": "ok"})

    def _refuse(self, reason: str) -> web.Response:
        self.requests.append((400, ""))
        return web.Response(status=400, text=reason)
