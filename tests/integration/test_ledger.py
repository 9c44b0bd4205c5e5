"""The ledger against what the destinations took, purchase by purchase and cent by cent, through
SIGKILLs at random moments (issue 20, part 1)."""

import collections
import random
import threading
import time
from decimal import Decimal

import orjson
import pytest

from tests.agentproc import MONITOR, Agent, cli, file_output, forward_input, forward_output, get_json
from tests.integration.test_forward_output import HIVE_FILTER
from tests.integration.test_mirrors import IDS_TAG, TAG, mirrors, purchase, send, vendors  # noqa: F401 (a fixture)
from tests.wire import ForwardClient, event_time

GAME = TAG.split(".")[2]
OUTPUTS = ("hive", "appsflyer", "wisetracker", "naver")


def records(n: int, seed: int = 7) -> list[dict]:
    """Purchases of every kind the ledger tells apart: sold in USD or KRW, test purchases, refunds
    (their own transaction ids), and some without the identifiers AppsFlyer needs."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = rng.random()
        usd = rng.random() < 0.5
        price = rng.choice(["0.99", "1.99", "4.99", "99.99"]) if usd else rng.choice([1100, 1400, 5500, 33000])
        r = purchase(i, ids=kind >= 0.06, currency="USD" if usd else "KRW", product_price=price)
        if 0.06 <= kind < 0.12:
            r["hiveiap_purchase_test"] = "Y"
        elif 0.12 <= kind < 0.18:
            r.update(transaction_id=f"R-{i}", refund=True)
        out.append(r)
    return out


def revenue(r: dict) -> Decimal:
    price = Decimal(str(r["product_price"]))
    return -price if r.get("refund") else price


class Sender(threading.Thread):
    """Sends every chunk until it is acked, reconnecting to wherever the agent listens now."""

    def __init__(self, agent: Agent, chunks: list[list[dict]]):
        super().__init__(daemon=True)
        self.agent, self.chunks, self.acked = agent, chunks, 0
        self.pause = 0.04  # a stream, not one burst: the kills land while it flows
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for k, chunk in enumerate(self.chunks):
                while True:
                    client = None
                    try:
                        client = ForwardClient(self.agent.port, timeout=5)
                        client.send_chunk(TAG, [[event_time(int(time.time())), r] for r in chunk], f"k{k}")
                        time.sleep(self.pause)
                        break
                    except (OSError, TypeError, ValueError):  # killed mid-chunk, or not listening yet
                        time.sleep(0.05)
                    finally:
                        if client is not None:
                            client.close()
                self.acked += len(chunk)
        except BaseException as exc:
            self.error = exc


def ledger_rows(agent: Agent) -> list[dict]:
    done = cli(agent, "ledger", "--json")
    assert done.returncode == 0, done.stderr
    return orjson.loads(done.stdout)


def by_output(rows: list[dict]) -> dict[str, dict]:
    """Each output's rows summed over days (the purchases are all of today, but a kill at midnight…)."""
    summed: dict[str, dict] = {}
    for r in rows:
        assert r["in"] == r["delivered"] + sum(r["refused"].values()) + sum(r["skipped"].values()) + r["pending"]
        s = summed.setdefault(
            r["output"],
            {
                "in": 0,
                "delivered": 0,
                "pending": 0,
                "refused": collections.Counter(),
                "skipped": collections.Counter(),
                "revenue": collections.defaultdict(Decimal),
            },
        )
        for k in ("in", "delivered", "pending"):
            s[k] += r[k]
        s["refused"].update(r["refused"])
        s["skipped"].update(r["skipped"])
        for cur, amount in r["revenue"]["delivered"].items():
            s["revenue"][cur] += Decimal(amount)
    return summed


def accepted_revenue(sent: dict[str, dict], txns) -> dict[str, Decimal]:
    money: dict[str, Decimal] = collections.defaultdict(Decimal)
    for t in set(txns):
        money[sent[t]["currency"]] += revenue(sent[t])
    return {c: v for c, v in money.items() if v}


@pytest.mark.timeout(240)
def test_the_ledger_matches_what_each_destination_took_through_sigkills(tmp_path, vendors):  # noqa: F811
    af, wt, nv = vendors
    for fake in (af, wt, nv):
        fake.delay = 0.01  # about 400 purchases a second each: the kills land mid-delivery
    total = 3000
    sent = {r["transaction_id"]: r for r in records(total)}
    chunks = [list(sent.values())[k : k + 100] for k in range(0, total, 100)]
    with Agent(tmp_path / "collector", forward_input() + file_output()) as collector:
        agent = Agent(
            tmp_path / "sidecar",
            forward_input()
            + HIVE_FILTER
            + forward_output([("127.0.0.1", collector.port)], require_ack_response=True, key_style="snake")
            + mirrors(af, wt, nv, in_flight=4),
            agent_section="delivery_processes = 2",
        )
        rng = random.Random(11)
        try:
            agent.start()
            sender = Sender(agent, chunks)
            sender.start()
            kills = 0
            while kills < 5:  # while purchases stream in, and while the vendors still take them
                time.sleep(rng.uniform(0.2, 1.0))
                agent.kill()
                kills += 1
                agent.start()
            sender.join(120)
            assert sender.error is None and sender.acked == total

            def settled() -> bool:
                rows = by_output(ledger_rows(agent))
                return set(rows) == set(OUTPUTS) and all(r["pending"] == 0 and r["in"] >= total for r in rows.values())

            deadline = time.monotonic() + 90
            while not settled():
                assert time.monotonic() < deadline, ledger_rows(agent)
                time.sleep(0.5)
            assert agent.stop() == 0
        finally:
            agent.kill()
        hive_txns = [line["record"]["transaction_id"] for line in collector.output_lines()]
    ledger = by_output(ledger_rows(agent))
    print(
        f"{kills} kills; ledger by output:",
        {k: (v["in"], v["delivered"], dict(v["refused"]), dict(v["skipped"])) for k, v in ledger.items()},
    )
    # A kill between a chunk's fsync and its ack makes the sender send it again, and the journal holds
    # it twice (the second copy is not yet known to the dedup store): both copies came in.
    [came_in] = {row["in"] for row in ledger.values()}
    copies = came_in - total
    assert 0 <= copies <= 100 * kills
    purchases = [t for t, r in sent.items() if not r.get("refund")]
    refunds = total - len(purchases)
    tests = sum(1 for r in sent.values() if r["hiveiap_purchase_test"] == "Y")
    # Hive: every purchase, test ones too, and no refund (it would read as the purchase again).
    hive = ledger["hive"]
    assert set(hive_txns) == set(purchases)
    assert hive["delivered"] + hive["skipped"]["refund"] == came_in and not hive["refused"]
    if not copies:
        assert hive["delivered"] == len(purchases) and dict(hive["skipped"]) == {"refund": refunds}
        assert hive["revenue"] == accepted_revenue(sent, purchases)
    for name, fake in (("appsflyer", af), ("wisetracker", wt), ("naver", nv)):
        again = sum(n - 1 for n in collections.Counter(fake.transaction_ids()).values())
        print(f"{name}: {again} purchases sent again after a kill, counted once")
        took = set(fake.transaction_ids()) & set(sent)
        row = ledger[name]
        # Each purchase the vendor took is delivered once in the ledger, with its exact amount.
        assert row["delivered"] == len(took), name
        assert row["revenue"] == accepted_revenue(sent, took), name
        assert row["delivered"] + sum(row["refused"].values()) + sum(row["skipped"].values()) == came_in
        refused_here = {t for t in sent if t not in took and sent[t]["hiveiap_purchase_test"] != "Y"}
        if not copies:
            assert row["skipped"]["hiveiap_purchase_test"] == tests, name
            assert sum(row["refused"].values()) == len(refused_here), (name, row["refused"])
    assert ledger["appsflyer"]["refused"]["missing_identifier"] > 0


def test_the_ledger_cli_reads_the_file_with_the_agent_stopped_and_filters_rows(tmp_path):
    agent = Agent(tmp_path, forward_input() + HIVE_FILTER + file_output(key_style="snake") + MONITOR)
    with agent:
        client = ForwardClient(agent.port)
        rows = records(40)
        client.send_chunk(TAG, [[event_time(int(time.time())), r] for r in rows], "c0")
        client.close()
        agent.wait_for_output(40 - sum(1 for r in rows if r.get("refund")))
        deadline = time.monotonic() + 10
        while not (ledger_rows(agent) and ledger_rows(agent)[0]["pending"] == 0):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        metrics = get_json(agent.monitor_port, "/metrics")[1]
    [row] = ledger_rows(agent)  # stopped: read from the file
    delivered = (
        f'hive_agent_ledger_purchases_total{{output="local",game="{GAME}",state="delivered"}} {row["delivered"]}'
    )
    assert delivered in metrics
    assert f'hive_agent_ledger_revenue_total{{output="local",game="{GAME}",state="in",currency="USD"}}' in metrics
    assert (row["game"], row["output"], row["in"]) == (GAME, "local", 40)
    assert row["skipped"] == {"refund": sum(1 for r in rows if r.get("refund"))}
    usd = sum((revenue(r) for r in rows if r["currency"] == "USD"), Decimal(0))
    assert Decimal(row["revenue"]["in"]["USD"]) == usd
    assert row["revenue"]["pending"] == {} or all(Decimal(v) == 0 for v in row["revenue"]["pending"].values())
    table = cli(agent, "ledger")
    assert table.returncode == 0 and GAME in table.stdout and "local" in table.stdout
    assert orjson.loads(cli(agent, "ledger", "--json", "--game", "other").stdout) == []
    assert orjson.loads(cli(agent, "ledger", "--json", "--day", row["day"], "--output", "local").stdout) == [row]


def test_with_ledger_off_purchases_flow_and_nothing_is_counted_or_kept(tmp_path):
    agent = Agent(
        tmp_path,
        forward_input() + HIVE_FILTER + file_output(key_style="snake") + MONITOR,
        agent_section="ledger = false",
    )
    with agent:
        client = ForwardClient(agent.port)
        rows = [r for r in records(20) if not r.get("refund")]
        client.send_chunk(TAG, [[event_time(int(time.time())), r] for r in rows], "c0")
        client.close()
        assert len(agent.wait_for_output(len(rows))) == len(rows)
        metrics = get_json(agent.monitor_port, "/metrics")[1]
        assert "hive_agent_ledger_" not in metrics
    assert not list((tmp_path / "var").rglob("ledger.sqlite*"))
    assert cli(agent, "ledger", "--json").returncode == 2  # no ledger to read


def settled_rows(agent: Agent, outputs: set, timeout: float = 15.0) -> dict[str, dict]:
    """The ledger by output once every one of ``outputs`` has nothing pending."""
    deadline = time.monotonic() + timeout
    while True:
        rows = by_output(ledger_rows(agent))
        if set(rows) >= outputs and all(rows[o]["pending"] == 0 for o in outputs):
            return rows
        assert time.monotonic() < deadline, rows
        time.sleep(0.2)


def test_a_replayed_dead_letter_moves_from_refused_to_delivered(tmp_path, vendors):  # noqa: F811
    af, wt, nv = vendors
    agent = Agent(tmp_path, forward_input() + HIVE_FILTER + mirrors(af, wt, nv))
    with agent:
        send(agent.port, TAG, [purchase(1), purchase(2, ids=False, product_price="4.99", currency="USD")])
        before = settled_rows(agent, {"appsflyer", "wisetracker", "naver"})
        assert before["appsflyer"]["refused"] == {"missing_identifier": 1}
        assert before["appsflyer"]["delivered"] == 1
        identity = {"did": 5002, "uid": 1002, "appsflyer_id": "1700000000000-7777777", "advertising_id": "ad-known"}
        send(agent.port, IDS_TAG, [identity])
        replay = cli(agent, "deadletter", "replay", "--output", "appsflyer")
        assert replay.returncode == 0, replay.stderr
        deadline = time.monotonic() + 15
        while "T-2" not in af.transaction_ids():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        after = settled_rows(agent, {"appsflyer"})
    row = after["appsflyer"]
    assert (row["in"], row["delivered"], dict(row["refused"]), row["pending"]) == (2, 2, {}, 0)
    assert row["revenue"]["USD"] == Decimal("4.99") + revenue(purchase(1))
