"""One contract for every output type in the registry, through the delivery loop itself
(agent/delivery/runner.py) over a real journal: what the destination takes is delivered and
counted; a destination that fails for a while is retried until it takes the records; a
destination that refuses them (a 4xx) has them dead-lettered. A new output type fails the
first test here until it says which of these it meets."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest

from agent.deadletter import DeadLetterStore
from agent.delivery.runner import OutputRunner
from agent.journal.cursor import CursorStore
from agent.journal.journal import Journal
from agent.protocol import forward as fwd
from agent.registry import OUTPUTS
from tests.fakes.hive_http import FakeHiveHttp
from tests.fakes.vendors import FakeAppsFlyer, FakeNaverRelay, FakeWisetracker
from tests.unit.test_mirror_payloads import HIVE_SAMPLE, TAG, normalized
from tests.wire import event_time, pack

APP = HIVE_SAMPLE["app_id"]
N = 5
FAST = {"retry_wait": "50ms", "retry_max_interval": "100ms"}

# What each type can be asked to do: "ok" every output; "retry" those with a destination that can
# fail for a while; "refused" those whose destination can refuse records (a 4xx).
SCENARIOS = {
    "file": ["ok"],
    "stdout": ["ok"],
    "forward": ["ok", "retry"],
    "http": ["ok", "retry", "refused"],
    "appsflyer": ["ok", "retry", "refused"],
    "wisetracker": ["ok", "retry", "refused"],
    "naver": ["ok", "retry", "refused"],
}


def test_every_output_type_in_the_registry_is_under_the_contract():
    assert set(SCENARIOS) == set(OUTPUTS)


def purchase(i: int) -> dict[str, Any]:
    kst = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() + 9 * 3600))
    record = normalized(dict(HIVE_SAMPLE, transaction_id=f"T-{i}", purchase_time=kst, hiveiap_purchase_test=""))
    record.setdefault("_extra", {}).update(appsflyer_id=f"1700000000000-{i:07d}", advertising_id=f"ad-{i}")
    return record


class ForwardReceiver:
    """A Forward server that acks every chunk; told to, it closes the first ``fail`` connections
    without an ack (a collector restarting)."""

    def __init__(self, fail: int = 0):
        self.fail = fail
        self.records = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = fwd.ForwardDecoder()
        try:
            while data := await reader.read(65536):
                for frame in decoder.feed(data, time.time_ns()):
                    if not isinstance(frame, fwd.EventBatch):
                        continue
                    if self.fail:
                        self.fail -= 1
                        return
                    self.records += frame.count
                    if frame.chunk is not None:
                        writer.write(fwd.ack_bytes(frame.chunk))
                        await writer.drain()
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


@contextlib.asynccontextmanager
async def destination(kind: str, scenario: str, tmp_path: Path, monkeypatch):
    """(the output's config, how many records the destination took so far)."""
    script = {"ok": [], "retry": [503, 503], "refused": [400] * (2 * N)}[scenario]
    base = {"type": kind, "name": kind, **FAST}
    if kind == "file":
        path = tmp_path / "out.jsonl"
        yield {**base, "path": str(path)}, lambda: len(path.read_text().splitlines()) if path.exists() else 0
    elif kind == "stdout":
        stream = io.BytesIO()
        monkeypatch.setattr("sys.stdout", io.TextIOWrapper(stream))  # the output writes to its buffer
        yield base, lambda: len(stream.getvalue().splitlines())
    elif kind == "forward":
        receiver = ForwardReceiver(fail=2 if scenario == "retry" else 0)
        port = await receiver.start()
        servers = [{"host": "127.0.0.1", "port": port}]
        try:
            yield (
                {**base, "servers": servers, "require_ack_response": True, "recover_wait": "50ms"},
                lambda: receiver.records,
            )
        finally:
            await receiver.stop()
    elif kind == "http":
        with FakeHiveHttp(script) as hive:
            yield {**base, "url": hive.url, "timeout": "5s"}, lambda: len(hive.records)
    else:
        fake: Any = {
            "appsflyer": lambda: FakeAppsFlyer({APP: "af-token"}, script=script),
            "wisetracker": lambda: FakeWisetracker({1234: "wt-token"}, script=script),
            "naver": lambda: FakeNaverRelay(script=script),
        }[kind]()
        app = {
            "appsflyer": {"app_id": APP, "token": "af-token"},
            "wisetracker": {"service_number": 1234, "token": "wt-token"},
            "naver": {},
        }[kind]
        endpoint = {"appsflyer": "", "wisetracker": "/s2s/v1/s2sDataRcv.do", "naver": "/naver"}[kind]
        with fake:
            cfg = {**base, "endpoint": fake.url + endpoint}
            if app:
                cfg["apps"] = {APP: app}
            yield cfg, lambda: len(fake.events)


async def deliver(
    kind: str, cfg: dict[str, Any], tmp_path: Path, records: list[dict[str, Any]] | None = None
) -> tuple[OutputRunner, DeadLetterStore]:
    """``records`` (N purchases when not given) journaled, then delivered by ``kind`` until caught up."""
    records = records or [purchase(i) for i in range(N)]
    journal = Journal(tmp_path / "journal", fsync="off")
    journal.recover()
    await journal.start()
    entries = b"".join(pack([event_time(int(time.time()), i), r]) for i, r in enumerate(records))
    await journal.submit(TAG, entries, len(records))
    await journal.close()
    registered = OUTPUTS[kind]
    o_cfg = registered.config.validate(cfg)
    output = registered.build(o_cfg, tmp_path)
    await output.start()
    deadletters = DeadLetterStore(tmp_path / "deadletter")
    runner = OutputRunner(o_cfg, output, journal.directory, CursorStore(tmp_path / "cursors"), deadletters)
    draining, stopping = asyncio.Event(), asyncio.Event()
    draining.set()  # deliver up to the journal's end, then stop
    try:
        await asyncio.wait_for(runner.run(draining, stopping), 30)
    finally:
        await output.close()
    return runner, deadletters


CASES = [(kind, scenario) for kind, scenarios in SCENARIOS.items() for scenario in scenarios]


@pytest.mark.parametrize(("kind", "scenario"), CASES, ids=[f"{k}-{s}" for k, s in CASES])
async def test_the_output_contract(kind, scenario, tmp_path, monkeypatch):
    async with destination(kind, scenario, tmp_path, monkeypatch) as (cfg, taken):
        runner, deadletters = await deliver(kind, cfg, tmp_path)
        stats = runner.stats
        if scenario == "refused":
            assert (taken(), stats.sent_records, stats.dead_lettered) == (0, 0, N)
            [(source, info)] = deadletters.summary(samples=0).items()
            assert source == kind and info["count"] == N
            assert all(reason.startswith("HTTP 400") for reason, _ in info["reasons"]), info["reasons"]
        else:
            assert (taken(), stats.sent_records, stats.dead_lettered) == (N, N, 0)
            assert (stats.retries > 0) == (scenario == "retry")
        # The cursor is past every record: delivered or dead-lettered, none left for the next start.
        assert CursorStore(tmp_path / "cursors").load(kind) is not None
        assert json.dumps(runner.snapshot().position)  # the snapshot the monitor reads says where it stands


async def test_a_mirror_refuses_before_sending_what_it_cannot_map_and_sends_the_rest(tmp_path, caplog):
    """Mapping → send → dead letter, with the AppsFlyer fake: a purchase with no AppsFlyer id
    cannot be mapped; it is dead-lettered without a request, the others reach the vendor."""
    records = [purchase(i) for i in range(N)]
    for record in records[:2]:
        del record["_extra"]["appsflyer_id"]
    with FakeAppsFlyer({APP: "af-token"}) as fake:
        cfg = {**FAST, "type": "appsflyer", "name": "appsflyer", "endpoint": fake.url}
        cfg["apps"] = {APP: {"app_id": APP, "token": "af-token"}}
        runner, deadletters = await deliver("appsflyer", cfg, tmp_path, records)
        assert sorted(fake.transaction_ids()) == ["T-2", "T-3", "T-4"]
        assert fake.refusals == []  # the two were never sent
    assert (runner.stats.sent_records, runner.stats.dead_lettered) == (3, 2)
    # What the log says of them is what happened: no request was made (not "refused by the destination").
    [said] = [r.getMessage() for r in caplog.records if "dead-lettered" in r.getMessage()]
    assert "2 records refused before sending" in said
    assert deadletters.summary(samples=0)["appsflyer"]["count"] == 2


@pytest.mark.parametrize(
    ("kind", "options", "sent"),
    [
        ("http", {}, ["T-0", "T-2"]),
        ("http", {"refunds": "send"}, ["T-0", "T-1", "T-2"]),
        ("file", {"key_style": "camel"}, ["T-0", "T-2"]),
        ("file", {}, ["T-0", "T-1", "T-2"]),  # raw: the refund flag goes along, nothing is lost
    ],
    ids=["http", "http-refunds-send", "file-camel", "file-raw"],
)
async def test_an_output_that_renders_the_hive_spec_skips_refunds_unless_asked(
    kind, options, sent, tmp_path, monkeypatch
):
    """The spec has no refund field: rendered to it, a refund would be its purchase a second time."""
    records = [purchase(0), purchase(1), purchase(2)]
    records[1]["_extra"]["refund"] = "Y"  # as the hive filter keeps the sender's refund flag
    async with destination(kind, "ok", tmp_path, monkeypatch) as (cfg, taken):
        runner, _ = await deliver(kind, {**cfg, **options}, tmp_path, records)
        assert taken() == len(sent)
    if kind == "file":
        lines = [json.loads(x)["record"] for x in (tmp_path / "out.jsonl").read_text().splitlines()]
        assert [r.get("transactionId") or r.get("transaction_id") for r in lines] == sent
    assert runner.stats.refunds_skipped == 3 - len(sent)
    assert runner.stats.sent_records == len(sent)
