"""Health that tells the truth: /health, the exit code of `hive-agent status` and hive_agent_healthy
say unhealthy while nothing is delivered, and healthy again once it is (agent/health.py)."""

import json
import os
import signal
import subprocess
import time

from tests.agentproc import Agent, cli, file_output, forward_input, forward_output, free_port, get_json, wait_until
from tests.integration.test_monitor import metric
from tests.wire import ForwardClient, event_time


def monitor(unhealthy_after: str = "2s") -> str:
    return f'[monitor]\nbind = "127.0.0.1"\nport = 0\nunhealthy_after = "{unhealthy_after}"\n'


def status(agent: Agent) -> subprocess.CompletedProcess:
    return cli(agent, "status", timeout=60)


def healthy_gauge(agent: Agent) -> float:
    return metric(get_json(agent.monitor_port, "/metrics")[1], "hive_agent_healthy")


def test_an_output_whose_only_server_is_down_turns_the_agent_unhealthy_and_back(tmp_path):
    port = free_port()
    cfg = (
        monitor("2s")
        + forward_input()
        + forward_output([("127.0.0.1", port)], retry_wait="100ms", retry_max_interval="500ms")
    )
    with Agent(tmp_path / "sidecar", cfg) as sidecar:
        client = ForwardClient(sidecar.port)
        client.send_chunk("game.purchase", [[event_time(1_700_000_000), {"seq": 1}]], "c1")
        client.close()
        assert get_json(sidecar.monitor_port, "/health")[0] == 200  # one failed try is not a verdict
        code, body = wait_until(lambda: (r := get_json(sidecar.monitor_port, "/health"))[0] == 503 and r, timeout=15)
        [reason] = json.loads(body)["problems"]
        assert reason.startswith("output hive has never delivered") and "unhealthy_after 2s" in reason
        shown = status(sidecar)
        assert shown.returncode == 1 and "output hive has never delivered" in shown.stdout
        assert healthy_gauge(sidecar) == 0
        # The server comes back: delivered, and healthy again within a few seconds.
        with Agent(tmp_path / "collector", forward_input(port=port) + file_output()) as collector:
            collector.wait_for_records("seq", {1}, timeout=15)
            wait_until(lambda: get_json(sidecar.monitor_port, "/health")[0] == 200, timeout=10)
            assert status(sidecar).returncode == 0 and healthy_gauge(sidecar) == 1
            assert collector.stop() == 0
        assert sidecar.stop() == 0


def test_a_killed_delivery_process_is_unhealthy_until_it_is_back(tmp_path):
    with Agent(tmp_path, monitor("60s") + forward_input() + file_output()) as agent:
        wait_until(lambda: get_json(agent.monitor_port, "/health")[0] == 200)
        [child] = subprocess.run(["pgrep", "-P", str(agent.proc.pid)], capture_output=True, text=True).stdout.split()
        os.kill(int(child), signal.SIGKILL)
        seen = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            code, body = get_json(agent.monitor_port, "/health")
            seen.append(code)
            if code == 503:
                assert "delivery process 0 is down" in json.loads(body)["problems"]
            if 503 in seen and code == 200:
                break
            time.sleep(0.05)
        assert 503 in seen and seen[-1] == 200, seen[-5:]
        assert agent.stop() == 0


def test_a_nearly_full_journal_is_unhealthy(tmp_path):
    port = free_port()  # nobody listens: the journal only fills
    cfg = monitor("1h") + forward_input() + forward_output([("127.0.0.1", port)], retry_wait="1s")
    with Agent(tmp_path, cfg, journal='segment_bytes = "64KiB"\nmax_bytes = "256KiB"\nfsync = "off"') as agent:
        client = ForwardClient(agent.port)
        for i in range(60):  # 60 × 4 KiB: past 90% of 256 KiB
            client.send_chunk("game.purchase", [[event_time(1_700_000_000), {"seq": i, "pad": "x" * 4000}]], f"c{i}")
        client.close()
        code, body = wait_until(lambda: (r := get_json(agent.monitor_port, "/health"))[0] == 503 and r, timeout=10)
        assert any(p.startswith("the journal is") and "full" in p for p in json.loads(body)["problems"]), body
