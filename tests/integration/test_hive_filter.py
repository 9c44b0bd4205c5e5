"""The hive filter in the running agent: normalized purchases out, warned or dead-lettered as configured."""

import re
from pathlib import Path

import orjson

from tests.agentproc import Agent, file_output, forward_input, get_json, wait_until
from tests.unit.test_hive_purchase_log import COMPLETE, SEED_EXAMPLE
from tests.wire import ForwardClient, event_time

HIVE_FILTER = '[[filters]]\ntype = "hive"\nname = "hive"\nmatch = "ha2union.game.*.purchase_log"\n'
TAG = "ha2union.game.misample.purchase_log"
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "conf" / "agent.toml"


def metric(text: str, name: str, **labels) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(rf"^{name}{{{re.escape(want)}}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_the_seed_example_sent_to_the_default_config_reaches_the_output_with_warnings(tmp_path):
    """conf/agent.toml as shipped (ports made free): the seed's own record is no dead letter."""
    agent = Agent(tmp_path, "")
    agent.config.write_text(re.sub(r"^port = \d+$", "port = 0", DEFAULT_CONFIG.read_text(), flags=re.M))
    with agent:
        client = ForwardClient(agent.port)
        client.send_chunk(TAG, [[event_time(1_700_000_000), SEED_EXAMPLE]], "seed")
        client.close()
        [line] = agent.wait_for_output(1, path="var/out/events.jsonl")
        text = wait_until(
            lambda: (
                (t := get_json(agent.monitor_port, "/metrics")[1])
                and metric(t, "hive_agent_normalization_warnings_total", component="hive-normalize")
                and t
            )
        )
    record = line["record"]
    assert record["transactionId"] == "GPA.3333-8449-4747-11111" and record["clientIp"] == "112.114.245.232"
    assert record["productName"] == "uc9c0"  # kept as sent, and warned
    for field, rule in (
        ("server_uid", "required"),
        ("item_send_ok", "required"),
        ("client_ip", "alias"),
        ("timezone", "timezone_assumed"),
        ("product_name", "escape_lost"),
    ):
        assert (
            metric(text, "hive_agent_invalid_events_total", component="hive-normalize", field=field, rule=rule) == 1
        ), (field, rule)
    assert metric(text, "hive_agent_component_dead_lettered_events_total", component="hive-normalize") == 0
    assert not (tmp_path / "var/deadletter").exists() or not any((tmp_path / "var/deadletter").iterdir())


def test_by_default_a_value_that_breaks_the_spec_goes_on_as_sent_with_a_warning(tmp_path):
    with Agent(tmp_path, forward_input() + HIVE_FILTER + file_output(path="out/hive.jsonl")) as agent:
        client = ForwardClient(agent.port)
        t = event_time(1_700_000_000)
        client.send_chunk(TAG, [[t, dict(COMPLETE, product_price="1,99", timezone="KST")]], "p1")
        client.close()
        [line] = agent.wait_for_output(1, path="out/hive.jsonl")
    assert line["record"]["product_price"] == "1,99" and line["record"]["timezone"] == "KST"
    assert not (tmp_path / "var/deadletter/hive.jsonl").exists()


def test_strict_purchases_are_normalized_invalid_ones_dead_lettered_other_tags_untouched(tmp_path):
    outputs = file_output(path="out/hive.jsonl", name="local", key_style="camel") + file_output(
        path="out/journal-view.jsonl", name="raw"
    )
    with Agent(tmp_path, forward_input() + HIVE_FILTER + "strict = true\n" + outputs) as agent:
        client = ForwardClient(agent.port)
        t = event_time(1_700_000_000, 42)
        bad = dict(COMPLETE, product_price="1,99")
        client.send_chunk(
            "ha2union.game.misample.purchase_log",
            [[t, dict(COMPLETE, appsflyer_id="af-1", ip="1.1.1.1")], [t, bad]],
            "p1",
        )
        client.send_chunk("ha2union.game.misample.login_log", [[t, {"ip": "1.2.3.4", "anything": True}]], "p2")
        client.close()
        lines = agent.wait_for_output(2, path="out/hive.jsonl")
        raw = agent.wait_for_output(2, path="out/journal-view.jsonl")
    purchase = next(l for l in lines if l["tag"].endswith("purchase_log"))["record"]
    assert purchase["clientIp"] == "112.114.245.232" and purchase["gameIndex"] == 2414
    assert purchase["productPrice"] == 1.99 and purchase["nationality"] == "US"
    assert purchase["hiveiapPurchaseTest"] == "Y" and purchase["category"] == "misample_purchase_log"
    assert purchase["gifteeUid"] is None
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
    cfg = forward_input() + HIVE_FILTER + "dedup_window = 0\n" + file_output(path="out/hive.jsonl")
    with Agent(tmp_path, cfg) as agent:
        client = ForwardClient(agent.port)
        rec = dict(COMPLETE, transaction_id="T-9")
        client.send_chunk("ha2union.game.misample.purchase_log", [[event_time(1_700_000_000), rec]] * 3, "c")
        client.close()
        assert len(agent.wait_for_output(3, path="out/hive.jsonl")) == 3


def test_a_refund_is_not_a_duplicate_of_its_purchase_and_each_is_delivered_once(tmp_path):
    cfg = forward_input() + HIVE_FILTER + file_output(path="out/hive.jsonl", key_style="raw")
    t = event_time(1_700_000_000)
    purchase = dict(COMPLETE, transaction_id="T-7")
    refund = dict(purchase, refund="Y")
    with Agent(tmp_path, cfg) as agent:
        client = ForwardClient(agent.port)
        client.send_chunk(TAG, [[t, purchase], [t, refund]], "c1")
        client.send_chunk(TAG, [[t, purchase], [t, refund]], "c2")  # both sent again
        client.close()
        agent.wait_for_output(2, path="out/hive.jsonl")
        agent.wait_for_log("2 duplicate purchases dropped")
        assert agent.stop() == 0
    lines = agent.output_lines("out/hive.jsonl")
    assert sorted(str(line["record"].get("_extra")) for line in lines) == ["None", "{'refund': 'Y'}"]
