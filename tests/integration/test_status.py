"""hive-agent status: one screen from the running agent's monitor, and an exit code scripts use."""

import json

from tests.agentproc import MONITOR, Agent, file_output, forward_input, get_json, http_output, wait_until
from tests.fakes.hive_http import FakeHiveHttp
from tests.integration.test_cli import hive_agent
from tests.wire import ForwardClient, event_time

PURCHASE = {
    "app_id": "app.a",
    "transaction_id": "T-1",
    "category": "purchase_log",
    "guid": "g1",
    "purchase_time": "2026-11-01 12:00:00",
    "timezone": "GMT+09:00",
}


def test_status_says_healthy_or_which_output_waits_and_why(tmp_path):
    with FakeHiveHttp([401] * 50) as hive:
        cfg = (
            MONITOR
            + forward_input()
            + file_output()
            + http_output(hive.url, retry_wait="100ms", retry_max_interval="1s")
        )
        with Agent(tmp_path, cfg) as agent:
            client = ForwardClient(agent.port)
            client.send_chunk("ha2union.game.g.purchase_log", [[event_time(1_700_000_000), PURCHASE]], "c1")
            client.close()
            agent.wait_for_output(1)
            agent.wait_for_log("output hive-http: PAUSED")
            wait_until(lambda: get_json(agent.monitor_port, "/health")[0] == 503)  # the delivery process reported
            shown = hive_agent("status", "-c", str(agent.config), "--interval", "0.2", cwd=tmp_path)
            as_json = hive_agent("status", "-c", str(agent.config), "--json", "--interval", "0.2", cwd=tmp_path)
            assert agent.stop() == 0
    assert shown.returncode == 1, shown.stderr
    assert "UNHEALTHY" in shown.stdout and "output hive-http is paused" in shown.stdout
    assert "hive-http" in shown.stdout and "paused: HTTP 401" in shown.stdout
    report = json.loads(as_json.stdout)
    assert as_json.returncode == 1 and report["healthy"] is False
    [inp] = report["inputs"]
    assert inp["name"] == "forward.0" and inp["events"] == 1 and inp["open"] == "0 connections"
    outputs = {o["name"]: o for o in report["outputs"]}
    assert outputs["local"]["state"] == "ok" and outputs["local"]["sent"] == 1
    assert outputs["hive-http"]["state"] == "paused" and outputs["hive-http"]["backlog_bytes"] > 0
    assert outputs["hive-http"]["backlog_events"] == 1 and outputs["local"]["backlog_events"] == 0
    assert report["journal"]["max_bytes"] > report["journal"]["bytes"] > 0


def test_status_of_a_healthy_agent_exits_0_and_without_a_monitor_2(tmp_path):
    with Agent(tmp_path / "a", MONITOR + forward_input() + file_output()) as agent:
        ok = hive_agent("status", "-c", str(agent.config), "--interval", "0.1", cwd=tmp_path / "a")
        assert agent.stop() == 0
    assert ok.returncode == 0 and "hive-agent: healthy" in ok.stdout and "dead letters: none" in ok.stdout
    with Agent(tmp_path / "b", forward_input() + file_output()) as agent:
        blind = hive_agent("status", "-c", str(agent.config), cwd=tmp_path / "b")
        assert agent.stop() == 0
    assert blind.returncode == 2 and "no [monitor] section" in blind.stderr
