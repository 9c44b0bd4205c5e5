"""The hive filter in the running agent: normalized purchases out, invalid ones dead-lettered."""

import orjson

from tests.agentproc import Agent, file_output, forward_input
from tests.unit.test_hive_purchase_log import COMPLETE, SEED_EXAMPLE
from tests.wire import ForwardClient, event_time

HIVE_FILTER = '[[filters]]\ntype = "hive"\nname = "hive"\nmatch = "ha2union.game.*.purchase_log"\nstrict = false\n'


def test_purchases_are_normalized_invalid_ones_dead_lettered_other_tags_untouched(tmp_path):
    outputs = (file_output(path="out/hive.jsonl", name="local", key_style="camel")
               + file_output(path="out/journal-view.jsonl", name="raw"))
    with Agent(tmp_path, forward_input() + HIVE_FILTER + outputs) as agent:
        client = ForwardClient(agent.port)
        t = event_time(1_700_000_000, 42)
        bad = dict(COMPLETE, product_price="1,99")  # a mirror field: a hard error even when not strict
        client.send_chunk("ha2union.game.misample.purchase_log",
                          [[t, dict(SEED_EXAMPLE, appsflyer_id="af-1")], [t, bad]], "p1")
        client.send_chunk("ha2union.game.misample.login_log", [[t, {"ip": "1.2.3.4", "anything": True}]], "p2")
        client.close()
        lines = agent.wait_for_output(2, path="out/hive.jsonl")
        raw = agent.wait_for_output(2, path="out/journal-view.jsonl")
    purchase = next(l for l in lines if l["tag"].endswith("purchase_log"))["record"]
    assert purchase["clientIp"] == "112.114.245.232" and purchase["gameIndex"] == 2414
    assert purchase["productPrice"] == 1.99 and purchase["nationality"] == "US"
    assert purchase["hiveiapPurchaseTest"] == "Y" and purchase["category"] == "misample_purchase_log"
    assert "appsflyer_id" not in purchase and "_extra" not in purchase and "ip" not in purchase
    # The journal keeps the fields outside the spec for the mirrors.
    journaled = next(l for l in raw if l["tag"].endswith("purchase_log"))["record"]
    assert journaled["_extra"] == {"appsflyer_id": "af-1"}
    # Other tags pass through untouched.
    login = next(l for l in raw if l["tag"].endswith("login_log"))["record"]
    assert login == {"ip": "1.2.3.4", "anything": True}
    [dead] = [orjson.loads(x) for x in (tmp_path / "var/deadletter/hive.jsonl").read_bytes().splitlines()]
    assert dead["record"]["product_price"] == "1,99" and dead["tag"] == "ha2union.game.misample.purchase_log"
    assert "product_price='1,99': not a plain decimal number" in dead["reason"]
    assert dead["time"] == "2023-11-14T22:13:20.000000042Z"
    assert "1 of 2 records invalid, dead-lettered" in agent.log()
