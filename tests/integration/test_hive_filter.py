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


def test_a_resent_purchase_is_delivered_once_even_across_restarts(tmp_path):
    cfg = forward_input() + HIVE_FILTER + file_output(path="out/hive.jsonl", key_style="snake")
    tag = "ha2union.game.misample.purchase_log"
    t = event_time(1_700_000_000)
    first, second = dict(COMPLETE, transaction_id="T-1"), dict(COMPLETE, transaction_id="T-2")
    with Agent(tmp_path, cfg) as agent:
        client = ForwardClient(agent.port)
        client.send_chunk(tag, [[t, first], [t, first], [t, second]], "c1")  # a duplicate inside one chunk
        client.send_chunk(tag, [[t, first]], "c2")  # a game server re-sending
        client.close()
        agent.wait_for_records("transaction_id", {"T-1", "T-2"}, path="out/hive.jsonl")
        assert agent.stop() == 0
    with Agent(tmp_path, cfg) as agent:
        client = ForwardClient(agent.port)
        client.send_chunk(tag, [[t, second], [t, dict(COMPLETE, transaction_id="T-3")]], "c3")
        client.close()
        agent.wait_for_records("transaction_id", {"T-1", "T-2", "T-3"}, path="out/hive.jsonl")
        assert agent.stop() == 0
    assert sorted(l["record"]["transaction_id"] for l in agent.output_lines("out/hive.jsonl")) == ["T-1", "T-2", "T-3"]
    assert "duplicate purchases dropped" in (tmp_path / "agent.log").read_text()


def test_dedup_window_zero_lets_every_copy_through(tmp_path):
    cfg = forward_input() + HIVE_FILTER + 'dedup_window = 0\n' + file_output(path="out/hive.jsonl")
    with Agent(tmp_path, cfg) as agent:
        client = ForwardClient(agent.port)
        rec = dict(COMPLETE, transaction_id="T-9")
        client.send_chunk("ha2union.game.misample.purchase_log", [[event_time(1_700_000_000), rec]] * 3, "c")
        client.close()
        assert len(agent.wait_for_output(3, path="out/hive.jsonl")) == 3
