"""Outputs in-process: what each writes for a batch, and the outcome the delivery loop gets."""

from __future__ import annotations

import io

import orjson

from agent.component import SendResult
from agent.journal.batch import TagBatch
from agent.journal.record import batch_payload
from agent.outputs.file import FileOutput
from agent.outputs.http import HttpOutput, HttpOutputConfig
from agent.outputs.stdout import StdoutOutput
from tests.fakes.hive_http import FakeHiveHttp
from tests.wire import event_time, pack

T = 1_700_000_000


def batch(tag: str, records: list[dict]) -> TagBatch:
    entries = b"".join(pack([event_time(T, i), r]) for i, r in enumerate(records))
    return TagBatch(tag, payload=batch_payload(tag, entries, len(records)))


async def test_the_file_output_writes_one_json_line_per_event_per_tag_file(tmp_path):
    out = FileOutput("local", str(tmp_path / "out/{tag}.jsonl"))
    outcome = await out.send([batch("a.b", [{"x": 1}, {"x": 2}]), batch("c", [{"y": 3}])])
    await out.flush()
    await out.close()
    assert outcome.result is SendResult.OK
    lines = [orjson.loads(x) for x in (tmp_path / "out/a.b.jsonl").read_bytes().splitlines()]
    assert lines == [
        {"tag": "a.b", "time": "2023-11-14T22:13:20.000000000Z", "record": {"x": 1}},
        {"tag": "a.b", "time": "2023-11-14T22:13:20.000000001Z", "record": {"x": 2}},
    ]
    assert orjson.loads((tmp_path / "out/c.jsonl").read_bytes())["record"] == {"y": 3}


async def test_a_tag_too_long_for_a_file_name_is_the_records_fault_not_a_retry(tmp_path):
    out = FileOutput("local", str(tmp_path / "out/{tag}.jsonl"))
    outcome = await out.send([batch("x" * 300, [{"x": 1}])])
    await out.close()
    assert outcome.result is SendResult.REJECTED and "File name too long" in outcome.reason


async def test_stdout_writes_the_key_style_it_is_given():
    stream = io.BytesIO()
    out = StdoutOutput("console", stream=stream, key_style="camel")
    record = {"server_id": "s1", "transaction_id": "T-1", "_extra": {"appsflyer_id": "af"}}
    outcome = await out.send([batch("ha2union.game.g.purchase_log", [record])])
    assert outcome.result is SendResult.OK
    line = orjson.loads(stream.getvalue())
    assert line["record"]["serverId"] == "s1" and "_extra" not in line["record"]


async def test_the_http_output_posts_per_app_and_maps_answers_to_outcomes():
    records = [
        {
            "app_id": "app.a",
            "transaction_id": "T-1",
            "category": "purchase_log",
            "guid": "g1",
            "purchase_time": "2026-11-01 12:00:00",
            "timezone": "GMT+09:00",
        },
        {
            "app_id": "app.b",
            "transaction_id": "T-2",
            "category": "purchase_log",
            "guid": "g2",
            "purchase_time": "2026-11-01 12:00:00",
            "timezone": "GMT+09:00",
        },
    ]
    with FakeHiveHttp(["ok", "ok", 503, 401]) as hive:
        out = HttpOutput(HttpOutputConfig.validate(dict(type="http", name="hive-http", url=hive.url, timeout="5s")))
        await out.start()
        try:
            ok = await out.send([batch("ha2union.game.g.purchase_log", records)])
            retry = await out.send([batch("ha2union.game.g.purchase_log", records[:1])])
            pause = await out.send([batch("ha2union.game.g.purchase_log", records[:1])])
        finally:
            await out.close()
    assert ok.result is SendResult.OK and sorted(app for _, app in hive.requests[:2]) == ["app.a", "app.b"]
    assert retry.result is SendResult.RETRY and "503" in retry.reason
    assert pause.result is SendResult.PAUSE
    assert {r["transaction_id"] for r in hive.records} == {"T-1", "T-2"}
