"""key_style: every output that writes records writes them raw, in the spec's names, or as BigQuery's columns."""

import asyncio
import io

import pytest

from agent.config.document import AgentConfig
from agent.hive.records import EXTRA_KEY, field_of, render
from agent.journal.batch import TagBatch
from agent.outputs.http import hive_records
from agent.outputs.stdout import StdoutOutput

JOURNALED = {
    "server_id": "KR-2",
    "os_version": "17.4",
    "hiveiap_purchase_test": "Y",
    "note": "not in the spec",
    EXTRA_KEY: {"appsflyer_id": "af-1", "refund": "Y"},
}


def test_the_three_styles():
    assert render(JOURNALED, "raw") is JOURNALED
    assert render(JOURNALED, "snake") == {
        "server_id": "KR-2",
        "os_version": "17.4",
        "hiveiap_purchase_test": "Y",
        "note": "not in the spec",
    }
    assert render(JOURNALED, "camel") == {
        "serverId": "KR-2",
        "osVersion": "17.4",
        "hiveiapPurchaseTest": "Y",
        "note": "not in the spec",
    }
    assert render("not a map", "camel") == "not a map"
    assert field_of(JOURNALED, "refund") == "Y" and field_of(JOURNALED, "server_id") == "KR-2"


def test_stdout_writes_in_its_key_style():
    stream = io.BytesIO()
    out = StdoutOutput("out", stream=stream, key_style="camel")
    asyncio.run(out.send([TagBatch("t", [[0, dict(JOURNALED)]])]))
    assert b'"serverId":"KR-2"' in stream.getvalue() and b"appsflyer_id" not in stream.getvalue()


def test_http_writes_hive_records_in_its_key_style():
    [(_, _, body)] = hive_records(TagBatch("t", [[0, dict(JOURNALED)]]), "camel")
    assert body["serverId"] == "KR-2" and EXTRA_KEY not in body and "dateTime" in body


@pytest.mark.parametrize(
    "output",
    [
        'type = "file"\npath = "x.jsonl"',
        'type = "stdout"',
        'type = "http"\nurl = "http://127.0.0.1:9"',
        'type = "forward"\nservers = [{ host = "127.0.0.1" }]',
    ],
)
@pytest.mark.parametrize("style", ["raw", "snake", "camel"])
def test_every_record_writing_output_takes_key_style(output, style):
    import tomllib

    doc = tomllib.loads(f'[[inputs]]\ntype = "forward"\n[[outputs]]\nname = "out"\n{output}\nkey_style = "{style}"\n')
    assert AgentConfig.validate(doc).outputs[0].key_style == style


def test_as_is_is_still_understood_as_raw():
    import tomllib

    doc = tomllib.loads('[[inputs]]\ntype = "forward"\n[[outputs]]\ntype = "file"\npath = "x"\nkey_style = "as_is"\n')
    assert AgentConfig.validate(doc).outputs[0].key_style == "raw"
