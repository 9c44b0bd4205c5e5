"""Hive HTTP ingestion against a local collector that enforces the contract and fails on demand."""

import subprocess
import sys

from tests.agentproc import Agent, forward_input, http_output, wait_until
from tests.fakes.hive_http import FakeHiveHttp
from tests.integration.test_forward_output import HIVE_FILTER, send_purchases, txns

FAST_RETRY = dict(retry_wait="100ms", retry_max_interval="300ms")


def delivered(fake):
    return {r["transaction_id"] for r in fake.records}


def test_records_reach_hive_over_http_with_gzip_and_the_contract_fields(tmp_path):
    with FakeHiveHttp() as hive:
        cfg = forward_input() + HIVE_FILTER + http_output(hive.url, compress="gzip", batch_records=40)
        with Agent(tmp_path, cfg) as agent:
            send_purchases(agent.port, 0, 100)
            wait_until(lambda: delivered(hive) == txns(100))
    assert all(status == 200 and app == "com.com2us.misample" for status, app in hive.requests)
    assert max(len(hive.records), 0) == 100
    r = hive.records[0]
    assert r["category"] == "misample_purchase_log" and r["dateTime"] == "2023-11-15 07:13:20" and r["guid"]


def test_5xx_429_and_timeouts_are_retried_until_delivered(tmp_path):
    with FakeHiveHttp([500, 503, 429, ("delay", 3)]) as hive:
        cfg = forward_input() + HIVE_FILTER + http_output(hive.url, timeout="1s", **FAST_RETRY)
        with Agent(tmp_path, cfg) as agent:
            send_purchases(agent.port, 0, 20, chunk=20)
            wait_until(lambda: delivered(hive) == txns(20))
            log = agent.log()
    assert "HTTP 500" in log and "HTTP 503" in log and "HTTP 429" in log and "timed out after 1s" in log
    assert [s for s, _ in hive.requests][:3] == [500, 503, 429]


def test_400_dead_letters_with_the_response_then_replay_delivers(tmp_path):
    with FakeHiveHttp([400]) as hive:
        cfg = forward_input() + HIVE_FILTER + http_output(hive.url, **FAST_RETRY)
        with Agent(tmp_path, cfg) as agent:
            send_purchases(agent.port, 0, 10, chunk=10)
            agent.wait_for_log(r"10 records refused by the destination, dead-lettered: HTTP 400 .*scripted 400")
            listing = subprocess.run(
                [sys.executable, "-m", "agent", "deadletter", "list", "-c", "agent.toml"],
                cwd=tmp_path,
                capture_output=True,
                text=True,
            )
            assert "hive-http: 10 records" in listing.stdout and "HTTP 400" in listing.stdout
            assert delivered(hive) == set()
            # The cause is fixed (the fake accepts now): replay.
            replay = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "agent",
                    "deadletter",
                    "replay",
                    "-c",
                    "agent.toml",
                    "--output",
                    "hive-http",
                    "--reason",
                    "HTTP 400",
                ],
                cwd=tmp_path,
                capture_output=True,
                text=True,
            )
            assert replay.returncode == 0 and "10 dead letters of hive-http re-queued" in replay.stdout
            wait_until(lambda: delivered(hive) == txns(10))
            agent.wait_for_log(r"replay: 10 dead letters of hive-http are back in the journal")
        after = subprocess.run(
            [sys.executable, "-m", "agent", "deadletter", "list", "-c", "agent.toml"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert "no dead letters" in after.stdout
    assert len(hive.records) == 10


def test_401_pauses_the_output_and_keeps_the_backlog(tmp_path):
    with FakeHiveHttp([401, 403]) as hive:
        cfg = forward_input() + HIVE_FILTER + http_output(hive.url, **FAST_RETRY)
        with Agent(tmp_path, cfg) as agent:
            send_purchases(agent.port, 0, 5, chunk=5)
            agent.wait_for_log(r"output hive-http: PAUSED: HTTP 401")
            wait_until(lambda: delivered(hive) == txns(5))
            assert "PAUSED: HTTP 403" in agent.log()
    assert not (tmp_path / "var/deadletter/hive-http.jsonl").exists()


def test_replay_of_a_filters_dead_letters_runs_them_through_the_filter_again(tmp_path):
    strict = HIVE_FILTER.replace('type = "hive"', 'type = "hive"\nname = "hive"') + "strict = true\n"
    with FakeHiveHttp() as hive:
        from tests.unit.test_hive_purchase_log import SEED_EXAMPLE
        from tests.wire import ForwardClient, event_time

        agent = Agent(tmp_path, forward_input() + strict + http_output(hive.url)).start()
        try:
            client = ForwardClient(agent.port)
            client.send_chunk("ha2union.game.misample.purchase_log", [[event_time(1_700_000_000), SEED_EXAMPLE]], "c")
            client.close()
            agent.wait_for_log(r"1 of 1 records invalid, dead-lettered")
            agent.stop()
            # The operator decides the spec's own example is good enough: not strict (the default).
            agent = Agent(tmp_path, forward_input() + strict.replace("strict = true\n", "") + http_output(hive.url))
            agent.start()
            subprocess.run(
                [sys.executable, "-m", "agent", "deadletter", "replay", "-c", "agent.toml", "--output", "hive"],
                cwd=tmp_path,
                check=True,
                capture_output=True,
            )
            wait_until(lambda: delivered(hive) == {"GPA.3333-8449-4747-11111"})
        finally:
            agent.kill()
