"""What a destination answers never takes a token elsewhere or the agent's memory: no output
follows a redirect, and at most a few KiB of any answer are read."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import pytest
from aiohttp import web

from agent import secrets
from agent.component import SendResult
from agent.deadletter import DeadLetterStore
from agent.journal.batch import TagBatch
from agent.outputs.appsflyer import AppsFlyerOutput, AppsFlyerOutputConfig
from agent.outputs.http import HttpOutput, HttpOutputConfig
from agent.outputs.posting import MAX_ANSWER_BYTES
from tests.unit.test_mirror_payloads import HIVE_SAMPLE, TAG, normalized

APP = HIVE_SAMPLE["app_id"]


class Servers:
    """A thief that records whatever reaches it, a destination that moved to it, and one whose
    refusal never ends."""

    def __init__(self):
        self.stolen: list[dict] = []
        self.runners: list[web.AppRunner] = []

    async def serve(self, handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    async def thief(self, request: web.Request) -> web.Response:
        self.stolen.append(dict(request.headers) | {"body": await request.read()})
        return web.Response(text="ok")

    async def close(self) -> None:
        for runner in self.runners:
            await runner.cleanup()


@pytest.fixture
async def servers():
    s = Servers()
    s.thief_url = await s.serve(s.thief)

    async def moved(request: web.Request) -> web.Response:
        await request.read()
        raise web.HTTPTemporaryRedirect(s.thief_url + request.path)

    async def endless(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(status=400)
        await response.prepare(request)
        try:
            for _ in range(10_000_000):  # 160 GB: endless for a client that reads it all, bounded all the same
                await response.write(b"x" * 16384)
        except (ConnectionResetError, RuntimeError):
            pass
        return response

    s.moved_url = await s.serve(moved)
    s.endless_url = await s.serve(endless)
    yield s
    await s.close()


def hive_batch(records: list[dict]) -> TagBatch:
    return TagBatch(TAG, [[time.time_ns(), r] for r in records])


def purchase(i: int) -> dict:
    kst = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() + 9 * 3600))
    record = normalized(dict(HIVE_SAMPLE, transaction_id=f"T-{i}", purchase_time=kst, hiveiap_purchase_test=""))
    record.setdefault("_extra", {}).update(appsflyer_id=f"1700000000000-{i:07d}", advertising_id=f"ad-{i}")
    return record


async def test_the_http_output_takes_a_redirect_as_a_retry_and_its_header_goes_nowhere(servers):
    cfg = HttpOutputConfig.validate(
        {"type": "http", "name": "hive-http", "url": servers.moved_url, "headers": {"X-Api-Key": "key-never-moved"}}
    )
    out = HttpOutput(cfg)
    await out.start()
    try:
        outcome = await out.send([hive_batch([purchase(1)])])
    finally:
        await out.close()
    assert outcome.result is SendResult.RETRY
    assert "HTTP 307" in outcome.reason and "not followed" in outcome.reason
    assert servers.stolen == []


async def test_appsflyer_takes_a_redirect_as_a_retry_and_its_token_goes_nowhere(servers, tmp_path):
    cfg = AppsFlyerOutputConfig.validate(
        {
            "type": "appsflyer",
            "name": "appsflyer",
            "endpoint": servers.moved_url,
            "apps": {APP: {"app_id": "com.com2us.misample", "token": "af-token-never-moved"}},
        }
    )
    out = AppsFlyerOutput(cfg, tmp_path)
    await out.start()
    try:
        outcome = await out.send([hive_batch([purchase(2)])])
    finally:
        await out.close()
    assert outcome.result is SendResult.RETRY, outcome
    assert "not followed" in outcome.reason
    assert servers.stolen == []


async def test_an_endless_answer_is_read_to_its_bound_and_the_send_goes_on(servers):
    cfg = HttpOutputConfig.validate({"type": "http", "name": "hive-http", "url": servers.endless_url})
    out = HttpOutput(cfg)
    await out.start()
    try:
        outcome = await asyncio.wait_for(out.send([hive_batch([purchase(3)])]), 10)
    finally:
        await out.close()
    assert outcome.result is SendResult.OK and len(outcome.dead) == 1  # a 400: the record is dead-lettered
    reason = outcome.dead[0][3]
    assert reason.startswith("HTTP 400") and len(reason) < MAX_ANSWER_BYTES


async def test_a_destination_echoing_the_request_gets_back_no_secret_in_any_form(servers, tmp_path):
    """URL credentials go out as HTTP Basic (base64 of user:pass); a JSON echo escapes "/" as
    "\\/"; and an excerpt cut in the middle of a token must not keep its first characters."""
    key = "key/with/slashes-0123456789"

    async def echo(request: web.Request) -> web.Response:
        await request.read()
        text = json.dumps(dict(request.headers)).replace("/", "\\/")
        return web.Response(status=400, text=text)

    async def straddle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=400, text="x" * 295 + request.headers["X-Api-Key"])  # cut at 300

    basic = base64.b64encode(b"hive:url-pass-0123").decode()
    letters = DeadLetterStore(tmp_path / "deadletter")
    for handler in (echo, straddle):
        url = (await servers.serve(handler)).replace("http://", "http://hive:url-pass-0123@")
        cfg = HttpOutputConfig.validate({"type": "http", "name": "h", "url": url, "headers": {"X-Api-Key": key}})
        secrets.install(cfg)
        out = HttpOutput(cfg)
        await out.start()
        try:
            outcome = await out.send([hive_batch([purchase(4)])])
        finally:
            await out.close()
        assert len(outcome.dead) == 1 and outcome.dead[0][3].startswith("HTTP 400")
        letters.write_records("h", outcome.dead)
    secrets.install({})
    written = (tmp_path / "deadletter" / "h.jsonl").read_text()
    assert written.count("***") >= 3, written  # the Basic header, the key as JSON, the cut key
    for leaked in (key, key.replace("/", "\\/"), "url-pass-0123", basic, key[:5], basic[:9]):
        assert leaked not in written, leaked
