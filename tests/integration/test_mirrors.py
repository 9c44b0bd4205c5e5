"""Purchases mirrored to fake AppsFlyer, Wisetracker and Naver servers that enforce the contracts."""

import collections
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from tests.agentproc import MONITOR, Agent, forward_input, get_json, wait_until
from tests.fakes.vendors import FakeAppsFlyer, FakeNaverRelay, FakeWisetracker
from tests.integration.test_forward_output import HIVE_FILTER
from tests.unit.test_hive_purchase_log import COMPLETE
from tests.wire import ForwardClient, event_time

GAME = "misample"
TAG = f"ha2union.game.{GAME}.purchase_log"
IDS_TAG = f"ha2union.game.{GAME}.device_ids"
APP = "com.com2us.misample"  # the Hive app_id of the seed's sample record
FAST = 'retry_wait = "100ms"\nretry_max_interval = "300ms"\n'
NO_DEDUP = HIVE_FILTER + "dedup_window = 0\n"  # the mirrors' own once-only is under test


def kst_now() -> str:
    return (datetime.now(UTC) + timedelta(hours=9)).strftime("%Y-%m-%d %H:%M:%S")


def purchase(i: int, ids: bool = True, **changes) -> dict:
    record = {
        **COMPLETE,
        "transaction_id": f"T-{i}",
        "uid": 1000 + i,
        "did": 5000 + i,
        "hiveiap_purchase_test": "",
        "purchase_time": kst_now(),
        **changes,
    }
    if ids:
        record.update(appsflyer_id=f"1700000000000-{i:07d}", advertising_id=f"ad-{i}")
    return record


def send(port: int, tag: str, records: list[dict], chunk: int = 50) -> None:
    client = ForwardClient(port)
    for k in range(0, len(records), chunk):
        client.send_chunk(
            tag,
            [[event_time(int(time.time()), n), r] for n, r in enumerate(records[k : k + chunk])],
            f"c{time.monotonic_ns()}-{k}",
        )
    client.close()


def mirrors(
    af: FakeAppsFlyer,
    wt: FakeWisetracker,
    nv: FakeNaverRelay,
    appsflyer: dict | None = None,
    wisetracker: dict | None = None,
    **options,
) -> str:
    """The three mirror outputs; ``options`` for all three, ``appsflyer`` / ``wisetracker`` for one."""
    extra = "".join(f"{k} = {v}\n" for k, v in options.items())
    af_extra = extra + "".join(f"{k} = {v}\n" for k, v in (appsflyer or {}).items())
    wt_extra = extra + "".join(f"{k} = {v}\n" for k, v in (wisetracker or {}).items())
    return (
        f'[[outputs]]\ntype = "appsflyer"\nname = "appsflyer"\nendpoint = "{af.url}"\n{FAST}{af_extra}'
        f'[outputs.apps."{APP}"]\napp_id = "{APP}"\ntoken_env = "AF_TOKEN_TEST"\n\n'
        f'[[outputs]]\ntype = "wisetracker"\nname = "wisetracker"\nendpoint = "{wt.url}/s2s/v1/s2sDataRcv.do"\n'
        f'{FAST}{wt_extra}[outputs.apps."{APP}"]\nservice_number = 1234\ntoken_env = "WT_TOKEN_TEST"\n\n'
        f'[[outputs]]\ntype = "naver"\nname = "naver"\nendpoint = "{nv.url}/naver"\n{FAST}{extra}'
        # Unpaced here (its default is 10/s): these tests send up to a thousand purchases at once.
        f"fx_to_krw = {{ JPY = 9.1 }}\nrate_limit = 100000\n"
    )


@pytest.fixture
def vendors(monkeypatch):
    monkeypatch.setenv("AF_TOKEN_TEST", "af-secret")
    monkeypatch.setenv("WT_TOKEN_TEST", "wt-secret")
    with FakeAppsFlyer({APP: "af-secret"}) as af, FakeWisetracker({1234: "wt-secret"}) as wt, FakeNaverRelay() as nv:
        yield af, wt, nv


def wait_for(fakes, expected: set, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(expected <= set(f.transaction_ids()) for f in fakes):
            return
        time.sleep(0.05)
    raise TimeoutError(
        f"not every vendor has {len(expected)} purchases: {[len(set(f.transaction_ids()) & expected) for f in fakes]}"
    )


def wait_metric(agent: Agent, line: str, timeout: float = 10.0) -> str:
    """/metrics once it holds ``line`` (the delivery process reports every second)."""
    deadline = time.monotonic() + timeout
    while True:
        body = get_json(agent.monitor_port, "/metrics")[1]
        if line in body or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


def txns(n: int, start: int = 0) -> set:
    return {f"T-{i}" for i in range(start, start + n)}


def once_each(fake, expected: set) -> None:
    counts = collections.Counter(fake.transaction_ids())
    assert set(counts) == expected
    assert max(counts.values()) == 1, {t: n for t, n in counts.items() if n > 1}


@pytest.mark.parametrize("processes", [1, 2])
def test_each_purchase_reaches_each_vendor_once_in_its_own_terms(tmp_path, vendors, processes):
    af, wt, nv = vendors
    agent = Agent(
        tmp_path,
        forward_input() + NO_DEDUP + mirrors(af, wt, nv) + MONITOR,
        agent_section=f"delivery_processes = {processes}",
    )
    with agent:
        records = [purchase(i) for i in range(20)]
        send(agent.port, TAG, records)
        send(agent.port, TAG, records[:5])  # a game server sending again
        send(agent.port, TAG, [purchase(99, hiveiap_purchase_test="Y")])  # a test purchase
        wait_for((af, wt, nv), txns(20))
        body = wait_metric(agent, 'hive_agent_mirror_events_total{component="naver",what="test_skipped"} 1.0')
        body = wait_metric(agent, 'hive_agent_mirror_events_total{component="wisetracker",what="test_skipped"} 1.0')
        for group in range(processes):  # the outputs are spread over the delivery processes
            assert f'hive_agent_delivery_process_up{{group="{group}"}} 1.0' in body
        for name in ("appsflyer", "wisetracker", "naver"):
            assert f'hive_agent_mirror_events_total{{component="{name}",what="accepted"}} 20.0' in body
            assert f'hive_agent_mirror_events_total{{component="{name}",what="duplicates"}} 5.0' in body
            assert f'hive_agent_mirror_events_total{{component="{name}",what="test_skipped"}} 1.0' in body
        assert agent.stop() == 0
    for fake in (af, wt, nv):
        once_each(fake, txns(20))
        assert not fake.refusals, fake.refusals
    app, txn, body = af.events[0]
    assert app == APP and body["eventName"] == "af_purchase" and isinstance(body["eventValue"], str)
    assert body["appsflyer_id"].startswith("1700000000000-") and body["os"] == COMPLETE["os_version"]
    _, _, wise = wt.events[0]
    assert wise["SESSION"]["plat"] == "AOS" and wise["SESSION"]["advtId"].startswith("ad-")
    assert wise["REVENUE"]["product"]["revenue"] == 1.99
    _, _, naver = nv.events[0]
    assert "value" not in naver and naver["items"][0]["ext1"] == "USD"  # USD: items only


def test_a_5xx_storm_and_429_are_retried_and_still_deliver_once(tmp_path, vendors):
    af, wt, nv = vendors
    af.script = [500, 503, 429, 502] * 5
    wt.script = [503] * 10 + [429] * 3
    nv.script = [500] * 8
    with Agent(tmp_path, forward_input() + NO_DEDUP + mirrors(af, wt, nv, in_flight=4) + MONITOR) as agent:
        send(agent.port, TAG, [purchase(i) for i in range(30)])
        wait_for((af, wt, nv), txns(30))
        body = wait_metric(agent, 'hive_agent_mirror_events_total{component="wisetracker",what="accepted"} 30.0')
        for name in ("appsflyer", "wisetracker", "naver"):
            # A retried batch finds its accepted purchases delivered: not a game server's duplicate.
            assert f'hive_agent_mirror_events_total{{component="{name}",what="duplicates"}} 0.0' in body
        assert agent.stop() == 0
        assert "retry" in agent.log()
    for fake in (af, wt, nv):
        once_each(fake, txns(30))


def test_credentials_refused_pause_the_output_and_the_backlog_waits(tmp_path, vendors):
    af, wt, nv = vendors
    af.script = [401, 401]
    with Agent(tmp_path, forward_input() + NO_DEDUP + mirrors(af, wt, nv)) as agent:
        send(agent.port, TAG, [purchase(i) for i in range(3)], chunk=3)
        agent.wait_for_log("output appsflyer: PAUSED: .*HTTP 401")
        wait_for((af, wt, nv), txns(3))  # after retry_max_interval it tries again and the fake accepts
        assert agent.stop() == 0
    once_each(af, txns(3))


def test_missing_identifier_is_dead_lettered_then_replayed_once_the_identity_is_known(tmp_path, vendors):
    af, wt, nv = vendors
    agent = Agent(tmp_path, forward_input() + NO_DEDUP + mirrors(af, wt, nv))
    with agent:
        send(agent.port, TAG, [purchase(1), purchase(2, ids=False)])
        wait_for((af, wt), txns(1, 1))
        wait_for((nv,), txns(2, 1))  # Naver needs no identifier
        agent.wait_for_log("output appsflyer: 1 records refused before sending, dead-lettered: missing_identifier")
        agent.wait_for_log("output wisetracker: 1 records refused .*missing_identifier")
        # The game server reports the device's identifiers; then the operator replays.
        send(
            agent.port,
            IDS_TAG,
            [{"did": 5002, "uid": 1002, "appsflyer_id": "1700000000000-7777777", "advertising_id": "ad-known"}],
        )
        # No wait needed: each output reads the journal in order, the identity record before the replay.
        for output in ("appsflyer", "wisetracker"):
            run = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "agent",
                    "deadletter",
                    "replay",
                    "-c",
                    str(agent.config),
                    "--output",
                    output,
                    "--reason",
                    "missing_identifier",
                ],
                cwd=tmp_path,
                capture_output=True,
                text=True,
            )
            assert run.returncode == 0 and "1 dead letters" in run.stdout, run.stdout + run.stderr
        wait_for((af, wt, nv), txns(2, 1))
        time.sleep(0.5)
        assert agent.stop() == 0
    for fake in (af, wt, nv):
        once_each(fake, txns(2, 1))
    by_txn = {txn: body for _, txn, body in af.events}
    assert by_txn["T-2"]["appsflyer_id"] == "1700000000000-7777777"
    assert {b["REVENUE"]["transaction_id"]: b["SESSION"]["advtId"] for _, _, b in wt.events}["T-2"] == "ad-known"


def test_refunds_old_events_and_currencies_each_vendor_in_its_own_terms(tmp_path, vendors):
    af, wt, nv = vendors
    old = (datetime.now(UTC) + timedelta(hours=9) - timedelta(days=9)).strftime("%Y-%m-%d %H:%M:%S")
    records = [
        purchase(1, refund="Y"),
        purchase(2, purchase_time=old),
        purchase(3, currency="JPY", product_price="120"),
    ]
    with Agent(tmp_path, forward_input() + NO_DEDUP + mirrors(af, wt, nv)) as agent:
        send(agent.port, TAG, records)
        wait_for((af,), {"T-1", "T-3"})
        wait_for((wt,), {"T-2", "T-3"})
        wait_for((nv,), {"T-2", "T-3"})
        agent.wait_for_log("output naver: 1 records refused .*unsupported_refund")
        agent.wait_for_log("output appsflyer: 1 records refused .*too_old")
        assert agent.stop() == 0
    refund = [b for _, t, b in af.events if t == "T-1"][0]
    assert '"af_revenue":"-1.99"' in refund["eventValue"]
    jpy = [b for _, t, b in nv.events if t == "T-3"][0]
    assert jpy["value"] == 1092 and jpy["items"][0]["ext1"] == "KRW"  # 120 JPY × 9.1


def test_sigkill_loses_nothing_and_repeats_only_requests_in_flight(tmp_path, vendors):
    af, wt, nv = vendors
    for fake in (af, wt, nv):
        fake.delay = 0.02
    # Two delivery processes: the kill takes both, each with its own outputs' acceptance logs.
    agent = Agent(
        tmp_path, forward_input() + NO_DEDUP + mirrors(af, wt, nv, in_flight=4), agent_section="delivery_processes = 2"
    )
    total = 600
    kills = 0
    try:
        agent.start()
        send(agent.port, TAG, [purchase(i) for i in range(total)])  # acked: in the journal
        for _ in range(2):
            time.sleep(0.7)
            agent.kill()
            kills += 1
            agent.start()
        wait_for((af, wt, nv), txns(total), timeout=60)
        time.sleep(0.5)
        assert agent.stop() == 0
    finally:
        agent.kill()
    for name, fake in (("appsflyer", af), ("wisetracker", wt), ("naver", nv)):
        counts = collections.Counter(fake.transaction_ids())
        assert set(counts) == txns(total)
        repeated = sum(n - 1 for n in counts.values())
        print(f"{name}: {repeated} purchases sent again after {kills} kills (at most {4 * kills} were in flight)")
        assert repeated <= 4 * kills  # in_flight per kill: no vendor says whether an interrupted request landed


def test_appsflyer_answers_auth_400_pauses_other_400_and_repeated_500_dead_letter(tmp_path, vendors):
    af, wt, nv = vendors
    af.script = [(400, "Failed to Authenticate")] + [400] + [500] * 3
    cfg = (
        forward_input() + NO_DEDUP + mirrors(af, wt, nv, in_flight=1, appsflyer={"server_errors_before_dead_letter": 3})
    )
    with Agent(tmp_path, cfg) as agent:
        send(agent.port, TAG, [purchase(1)], chunk=1)
        agent.wait_for_log("output appsflyer: PAUSED: .*HTTP 400 .*Failed to Authenticate")
        agent.wait_for_log("output appsflyer: 1 records refused .*HTTP 400", timeout=15)
        send(agent.port, TAG, [purchase(2)], chunk=1)
        agent.wait_for_log("output appsflyer: 1 records refused .*HTTP 500", timeout=15)
        send(agent.port, TAG, [purchase(3)], chunk=1)
        wait_for((af,), {"T-3"})
        assert agent.stop() == 0
    assert af.transaction_ids() == ["T-3"]
    dead = (tmp_path / "var/deadletter/appsflyer.jsonl").read_text()
    assert '"transaction_id":"T-1"' in dead and '"transaction_id":"T-2"' in dead


def test_timeouts_are_retried_and_requests_in_flight_stay_under_the_limit(tmp_path, vendors):
    af, wt, nv = vendors
    nv.script = [("delay", 3)]
    for fake in (af, wt, nv):
        fake.delay = 0.05
    cfg = forward_input() + NO_DEDUP + mirrors(af, wt, nv, in_flight=3, timeout='"1s"')
    with Agent(tmp_path, cfg) as agent:
        send(agent.port, TAG, [purchase(i) for i in range(40)], chunk=40)
        wait_for((af, wt, nv), txns(40))
        agent.wait_for_log("output naver: .*timed out after 1s")
        assert agent.stop() == 0
    # (Not counted at the Naver fake: a request the agent gave up on still sleeps there.)
    assert max(f.max_in_flight for f in (af, wt)) == 3
    once_each(nv, txns(40))


def test_wisetracker_first_purchase_is_marked_once_per_user(tmp_path, vendors):
    af, wt, nv = vendors
    cfg = forward_input() + NO_DEDUP + mirrors(af, wt, nv, wisetracker={"first_purchase": "true"})
    with Agent(tmp_path, cfg) as agent:
        send(agent.port, TAG, [purchase(1), purchase(2, uid=1001)], chunk=2)  # the same user twice
        wait_for((wt,), {"T-1", "T-2"})
        send(agent.port, TAG, [purchase(3, uid=1001), purchase(4)], chunk=2)
        wait_for((wt,), {"T-3", "T-4"})
        assert agent.stop() == 0
    events = {b["REVENUE"]["transaction_id"]: b["REVENUE"]["event"] for _, _, b in wt.events}
    assert events == {"T-1": "w_first_purchase", "T-2": "w_purchase", "T-3": "w_purchase", "T-4": "w_first_purchase"}


def test_appsflyer_sends_the_earliest_deadline_first(tmp_path, vendors):
    af, wt, nv = vendors
    two_days_ago = (datetime.now(UTC) + timedelta(hours=9) - timedelta(days=2)).strftime("%Y-%m-%d %H:%M:%S")
    cfg = forward_input() + NO_DEDUP + mirrors(af, wt, nv, in_flight=1)
    with Agent(tmp_path, cfg) as agent:
        send(agent.port, TAG, [purchase(1), purchase(2, purchase_time=two_days_ago), purchase(3)], chunk=3)
        wait_for((af,), {"T-1", "T-2", "T-3"})
        assert agent.stop() == 0
    assert af.transaction_ids()[0] == "T-2"  # its 02:00 UTC cutoff passed first: it goes first (and is late)


def test_one_record_the_mapping_did_not_expect_never_holds_the_batch(tmp_path, vendors):
    """1,000 purchases in one chunk, one with quantity "two" (kept as sent, with a warning, at ingest):
    the 999 others reach every vendor on the first try; that one is dead-lettered as invalid."""
    af, wt, nv = vendors
    records = [purchase(i) for i in range(1000)]
    records[500] = purchase(500, quantity="two")
    with Agent(tmp_path, forward_input() + NO_DEDUP + mirrors(af, wt, nv, in_flight=32) + MONITOR) as agent:
        send(agent.port, TAG, records, chunk=1000)
        wait_for((af, wt, nv), txns(1000) - {"T-500"})
        body = wait_until(
            lambda: (
                (b := get_json(agent.monitor_port, "/metrics")[1])
                and all(
                    metric_value(b, "hive_agent_component_dead_lettered_events_total", name) == 1
                    for name in ("appsflyer", "wisetracker", "naver")
                )
                and b
            )
        )
        for name in ("appsflyer", "wisetracker", "naver"):
            assert metric_value(body, "hive_agent_component_retries_total", name) == 0
        assert agent.stop() == 0
    for name, fake in (("appsflyer", af), ("wisetracker", wt), ("naver", nv)):
        once_each(fake, txns(1000) - {"T-500"})
        [dead] = [orjson.loads(line) for line in (tmp_path / f"var/deadletter/{name}.jsonl").read_bytes().splitlines()]
        assert dead["record"]["transaction_id"] == "T-500"
        assert dead["reason"].startswith("invalid: quantity 'two' is not a whole number")


def metric_value(body: str, name: str, component: str) -> float:
    import re

    m = re.search(rf'^{name}{{component="{component}"[^}}]*}} (\S+)$', body, re.M)
    return float(m.group(1)) if m else 0.0


def test_purchases_reach_each_vendor_as_the_seeds_say(tmp_path, vendors):
    """Forward → hive filter (lenient, dedup on) → the three fakes, each enforcing its seed."""
    af, wt, nv = vendors
    utc_now = datetime.now(UTC)
    utc_time = utc_now.strftime("%Y-%m-%d %H:%M:%S")
    records = [
        purchase(1),
        purchase(1, refund="Y"),  # the refund of T-1: the same transaction_id, a second event
        purchase(2, timezone="UTC", purchase_time=utc_time),  # never read as KST
        purchase(3, timezone="KST"),  # present and not understood: never guessed
        purchase(4, platform="W"),  # Wisetracker's plat is AOS or IOS only
        purchase(5, quantity=3, product_price="5.97"),  # the price paid is the revenue
        purchase(6, ids=False, uid=1006),  # only an iOS identity is known for this user
    ]
    ios_identity = {
        "uid": 1006,
        "platform": "I",
        "appsflyer_id": "1700000000000-6666666",
        "idfa": "IDFA-6",
        "att": "authorized",
    }
    with Agent(tmp_path, forward_input() + HIVE_FILTER + mirrors(af, wt, nv)) as agent:
        send(agent.port, IDS_TAG, [ios_identity])
        send(agent.port, TAG, records, chunk=len(records))
        wait_for((af,), {"T-1", "T-2", "T-4", "T-5"})
        wait_for((wt,), {"T-1", "T-2", "T-5"})
        wait_for((nv,), {"T-1", "T-2", "T-4", "T-5", "T-6"})
        dead_letters = tmp_path / "var/deadletter"
        wait_until(
            lambda: (
                [
                    len((dead_letters / f"{name}.jsonl").read_bytes().splitlines())
                    if (dead_letters / f"{name}.jsonl").exists()
                    else 0
                    for name in ("appsflyer", "wisetracker", "naver")
                ]
                == [2, 4, 2]
            )
        )
        assert agent.stop() == 0
    for fake in (af, wt, nv):
        assert not fake.refusals, fake.refusals
    af_events = collections.defaultdict(list)
    for _, txn, body in af.events:
        af_events[txn].append(orjson.loads(body["eventValue"])["af_revenue"])
    assert sorted(af_events["T-1"]) == ["-1.99", "1.99"]  # the purchase and its refund
    [t2] = [b for _, t, b in af.events if t == "T-2"]
    assert t2["eventTime"] == utc_now.strftime("%Y-%m-%d %H:%M:%S") + ".000"
    assert af_events["T-5"] == ["5.97"]
    [wt5] = [b for _, t, b in wt.events if t == "T-5"]
    assert wt5["REVENUE"]["product"] == {
        "product_id": COMPLETE["product_id"],
        "product_name": "지 Gem Pack",
        "quantity": 3,
        "revenue": 5.97,
    }
    assert wt5["REVENUE"]["vtTz"] == wt5["SESSION"]["vtTz"]  # both the send time
    assert abs(wt5["SESSION"]["vtTz"] / 1000 - time.time()) < 120
    [nv5] = [b for _, t, b in nv.events if t == "T-5"]
    assert nv5["items"][0]["payAmount"] == 5.97 and nv5["items"][0]["quantity"] == 3
    reasons = {}
    for name in ("appsflyer", "wisetracker", "naver"):
        for line in (tmp_path / f"var/deadletter/{name}.jsonl").read_bytes().splitlines():
            item = orjson.loads(line)
            reasons[(name, item["record"]["transaction_id"])] = item["reason"].split(":")[0]
    assert reasons == {
        ("appsflyer", "T-3"): "invalid_time",
        ("wisetracker", "T-3"): "invalid_time",
        ("naver", "T-3"): "invalid_time",
        ("wisetracker", "T-1"): "unsupported_refund",
        ("naver", "T-1"): "unsupported_refund",
        ("wisetracker", "T-4"): "unsupported_platform",
        # An iOS identity is never sent with an Android purchase.
        ("appsflyer", "T-6"): "missing_identifier",
        ("wisetracker", "T-6"): "missing_identifier",
    }
