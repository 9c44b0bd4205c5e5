"""/metrics, /api/plugins.json and /health as an operator scrapes them."""

import json
import re

from tests.agentproc import MONITOR, Agent, file_output, forward_input, get_json, http_output, wait_until
from tests.fakes.hive_http import FakeHiveHttp
from tests.integration.test_forward_output import HIVE_FILTER
from tests.wire import ForwardClient, event_time


def metric(text: str, name: str, **labels) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {labels} not in /metrics")


def test_metrics_plugins_and_health_follow_what_happens(tmp_path, monkeypatch):
    monkeypatch.setenv("HIVE_TEST_FWD_KEY", "do-not-show-me")
    hive_filter = HIVE_FILTER.replace('type = "hive"', 'type = "hive"\nname = "hive"') + "strict = true\n"
    with FakeHiveHttp([401] * 3) as hive:
        cfg = (
            MONITOR
            + forward_input(shared_key="env:HIVE_TEST_FWD_KEY", self_hostname="agent")
            + forward_input(port=0, bind="127.0.0.2", name="plain")
            + hive_filter
            + file_output(name="local", key_style="camel")
            + http_output(hive.url, retry_wait="100ms", retry_max_interval="1s")
        )
        with Agent(tmp_path, cfg) as agent:
            port = agent.monitor_port
            assert port
            status, body = get_json(port, "/health")
            assert status == 200, body
            plain = int(re.search(r"plain on tcp 127\.0\.0\.2:(\d+)", agent.log()).group(1))
            client = ForwardClient(plain, host="127.0.0.2")
            t = event_time(1_700_000_000)
            from tests.unit.test_hive_purchase_log import COMPLETE

            client.send_chunk(
                "ha2union.game.misample.purchase_log",
                [
                    [t, dict(COMPLETE, transaction_id="A")],
                    [t, dict(COMPLETE, transaction_id="A")],
                    [t, dict(COMPLETE, transaction_id="B", currency="dollars")],
                ],
                "c1",
            )
            client.send(b"\xc1")  # garbage: counted as a protocol error
            client.close()
            # The http output is refused (401): paused, unhealthy, the backlog kept.
            status, body = wait_until(lambda: (r := get_json(port, "/health"))[0] == 503 and r)
            assert "output hive-http is paused" in body
            text = wait_until(
                lambda: (
                    (t := get_json(port, "/metrics")[1])
                    and metric(t, "hive_agent_output_paused", component="hive-http") == 1
                    and t
                )
            )
            assert metric(text, "hive_agent_component_received_events_total", component="plain") == 3
            assert metric(text, "hive_agent_dedup_hits_total", component="hive") == 1
            assert metric(text, "hive_agent_normalization_warnings_total", component="hive") == 0
            assert (
                metric(text, "hive_agent_invalid_events_total", component="hive", field="currency", rule="too_long")
                == 1
            )
            assert metric(text, "hive_agent_component_dead_lettered_events_total", component="hive") == 1
            assert metric(text, "hive_agent_component_errors_total", component="plain", reason="protocol") == 1
            assert metric(text, "hive_agent_output_pending_bytes", component="hive-http") > 0
            assert metric(text, "hive_agent_output_oldest_unsent_age_seconds", component="hive-http") > 0
            assert metric(text, "hive_agent_delivery_process_up") == 1
            status, body = get_json(port, "/api/plugins.json")
            plugins = {p["plugin_id"]: p for p in json.loads(body)["plugins"]}
            assert plugins["hive-http"]["output_plugin"] is True
            assert plugins["hive-http"]["buffer_total_queued_size"] > 0
            assert plugins["forward.0"]["plugin_category"] == "input"
            assert "do-not-show-me" not in body and plugins["forward.0"]["config"]["shared_key"] == "***"
            # Once Hive takes our credentials again, everything is delivered and the agent is healthy.
            wait_until(lambda: len(hive.records) == 1)
            status, body = wait_until(lambda: (r := get_json(port, "/health"))[0] == 200 and r)
            text = wait_until(
                lambda: (
                    (t := get_json(port, "/metrics")[1])
                    and metric(t, "hive_agent_component_sent_events_total", component="hive-http") == 1
                    and t
                )
            )
            assert metric(text, "hive_agent_output_oldest_unsent_age_seconds", component="hive-http") == 0
            assert metric(text, "hive_agent_component_sent_events_total", component="local") == 1
