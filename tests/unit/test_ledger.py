"""The ledger's pure parts (facts, sums, reason codes, money) and its store over a real journal file."""

from datetime import timedelta
from decimal import Decimal

import msgpack
import pytest

from agent.config.document import AgentConfig
from agent.journal.cursor import Position
from agent.journal.reader import JournalReader
from agent.journal.record import HEADER_SIZE, batch_payload, encode_record, segment_header
from agent.journal.segment import segment_path
from agent.ledger.plan import LedgerPlan
from agent.ledger.report import money, query
from agent.ledger.store import Ledger
from agent.ledger.tally import NO_CURRENCY, Reader, Tally, price_of, reason_code
from agent.protocol.event_time import pack_event_time

TAG = "ha2union.game.misample.purchase_log"
KST = Reader(timedelta(hours=9))


def test_a_purchase_is_counted_on_its_day_in_the_ledgers_timezone():
    # 23:30 in UTC is 08:30 the next day in KST; a record without timezone is KST already.
    utc = KST.facts(TAG, 0, {"purchase_time": "2026-12-01 23:30:00", "timezone": "UTC", "product_price": 1.99})
    kst = KST.facts(TAG, 0, {"purchase_time": "2026-12-01 23:30:00", "product_price": 1.99})
    assert (utc.day, kst.day) == ("2026-12-02", "2026-12-01")
    assert utc.game == "misample" and utc.amount == Decimal("1.99")
    assert Reader(timedelta(0)).facts(TAG, 0, {"purchase_time": "2026-12-02 05:00:00"}).day == "2026-12-01"


def test_an_unreadable_time_falls_back_to_the_event_time_and_no_currency_is_xxx():
    f = KST.facts(TAG, 1_764_633_600 * 10**9, {"purchase_time": "yesterday", "product_price": "1,000"})
    assert (f.day, f.currency, f.amount) == ("2025-12-02", NO_CURRENCY, 0)


def test_prices_are_exact_decimals_and_refunds_negative():
    assert price_of(0.1) + price_of(0.2) == Decimal("0.3")  # floats read as written, never summed as floats
    assert price_of("1400") == 1400 and price_of(True) == 0 and price_of("1e3") == 0 and price_of(2**70) == 0
    refund = KST.facts(TAG, 0, {"product_price": "4.99", "currency": "USD", "_extra": {"refund": True}})
    assert refund.amount == Decimal("-4.99")
    unknown = KST.facts(TAG, 0, {"product_price": "4.99", "refund": "yes"})
    assert unknown.amount == Decimal("4.99")  # neither a refund nor not: counted as sent


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        ("missing_identifier: no appsflyer_id for did 1", "missing_identifier"),
        ("HTTP 400 from https://api2.appsflyer.com/inappevent/x: bad", "http_400"),
        ("retry_timeout reached; last error: HTTP 503 from x", "retry_timeout"),
        ("rejected: ValueError: x", "rejected"),
        ("Something Else", "other"),
    ],
)
def test_dead_letter_reasons_become_codes(reason, code):
    assert reason_code(reason) == code


def test_money_keeps_every_digit_and_at_least_cents():
    assert (money(Decimal(41220)), money(Decimal("0.999")), money(Decimal("-1.5"))) == ("41220.00", "0.999", "-1.50")


def purchase(i: int, price: str = "1.99", currency: str = "USD") -> dict:
    return {
        "app_id": "app",
        "transaction_id": f"T-{i}",
        "purchase_time": "2026-12-01 10:00:00",
        "product_price": price,
        "currency": currency,
    }


def write_journal(directory, batches: list[list[dict]]) -> list[Position]:
    """One segment of one journal record per batch; the position after each."""
    directory.mkdir(parents=True, exist_ok=True)
    data, ends = bytearray(segment_header()), []
    for records in batches:
        entries = b"".join(b"\x92" + pack_event_time(0) + msgpack.packb(r) for r in records)
        data += encode_record(batch_payload(TAG, entries, len(records)))
        ends.append(Position(1, len(data)))
    segment_path(directory, 1).write_bytes(bytes(data))
    return ends


def config(outputs: int = 2) -> AgentConfig:
    return AgentConfig.validate(
        {
            "inputs": [{"type": "forward", "port": 0}],
            "filters": [{"type": "hive"}],
            "outputs": [{"type": "stdout", "name": f"out{i}", "match": "**"} for i in range(outputs)],
        }
    )


def test_in_is_counted_once_per_output_from_the_mark_and_a_settle_only_once(tmp_path):
    journal = tmp_path / "journal"
    ends = write_journal(journal, [[purchase(1), purchase(2)], [purchase(3, "1400", "KRW")]])
    ledger = Ledger(tmp_path / "ledger.sqlite", LedgerPlan(config()), journal)
    assert ledger.begin(Position(1, HEADER_SIZE)) == Position(1, HEADER_SIZE)
    assert ledger.advance_in(ends[0]) == 2
    assert ledger.advance_in() == 1 and ledger.advance_in() == 0  # from the mark: nothing twice
    reader = JournalReader(journal, Position(1, HEADER_SIZE))
    [first, _] = reader.read()
    reader.close()
    tally = Tally()
    tally.add_sums("delivered", "", ledger.plan.sums(first, KST, _batch(first)))
    tally.move(KST.facts(TAG, 0, purchase(2)), "refused", "http_400")
    tally.refusals.append(("app", "T-2", "http_400", KST.facts(TAG, 0, purchase(2))))
    assert ledger.settle("out0", tally, ends[0], 1)
    assert not ledger.settle("out0", tally, ends[0], 2)  # sent again after a kill: not counted again
    rows = {r["output"]: r for r in query(tmp_path / "ledger.sqlite")}
    assert rows["out0"]["in"] == 3 and rows["out1"]["in"] == 3
    assert (rows["out0"]["delivered"], rows["out0"]["refused"], rows["out0"]["pending"]) == (1, {"http_400": 1}, 1)
    assert rows["out0"]["revenue"]["in"] == {"KRW": "1400.00", "USD": "3.98"}
    assert rows["out0"]["revenue"]["pending"] == {"KRW": "1400.00"}
    # The refused purchase replayed and delivered: it leaves refused.
    replayed = Tally()
    replayed.add("delivered", "", KST.facts(TAG, 0, purchase(2)))
    replayed.replayed.append(("app", "T-2", KST.facts(TAG, 0, purchase(2))))
    assert ledger.settle("out0", replayed, Position(1, ends[1].offset + 1), 3)
    row = {r["output"]: r for r in query(tmp_path / "ledger.sqlite")}["out0"]
    assert (row["delivered"], row["refused"], row["pending"]) == (2, {}, 1)


def test_a_new_ledger_starts_at_the_journals_end_and_old_days_are_swept(tmp_path):
    journal = tmp_path / "journal"
    ends = write_journal(journal, [[purchase(1)]])
    ledger = Ledger(tmp_path / "ledger.sqlite", LedgerPlan(config(1)), journal)
    assert ledger.begin(ends[0]) == ends[0]
    assert ledger.advance_in() == 0  # journaled before the ledger began: never counted in
    assert ledger.output_mark("out0") == (ends[0], 0)
    ledger.add_duplicates({("2026-12-01", "misample"): 2})
    tally = Tally()
    tally.add("in", "out0", KST.facts(TAG, 0, purchase(9)))
    ledger.db.execute("BEGIN")
    ledger._add(tally, "")
    ledger.db.execute("COMMIT")
    [row] = query(tmp_path / "ledger.sqlite")
    assert (row["day"], row["duplicates"], row["pending"]) == ("2026-12-01", 2, 1)
    assert ledger.sweep("2026-12-02") == 1
    assert query(tmp_path / "ledger.sqlite") == []
    totals = ledger.db.execute("SELECT n FROM totals").fetchall()
    assert totals == [(1,)]  # the metrics' totals are never swept


def _batch(record):
    from agent.journal.batch import TagBatch

    return TagBatch(TAG, payload=record.payload)


def test_the_batch_sums_decoding_only_what_counts_equal_the_record_by_record_ones():
    from agent.ledger.tally import sums_of

    records = [
        purchase(1),
        purchase(2, "1400", "KRW"),
        dict(purchase(3, "4.99"), _extra={"refund": True}),
        dict(purchase(4), purchase_time="2026-12-01 23:59:59", timezone="GMT+00:00"),  # the next day in KST
        dict(purchase(5), purchase_time="2026-12-01T15:30:00Z"),
        dict(purchase(6), product_price=0.99),
    ]
    entries = b"".join(b"\x92" + pack_event_time(0) + msgpack.packb(r) for r in records)
    fast = KST.sums(TAG, b"\xdd" + len(records).to_bytes(4, "big") + entries)
    assert fast == sums_of(KST, TAG, [[0, r] for r in records])
    assert fast[("2026-12-02", "misample", "USD")] == [2, Decimal("3.98")]
    assert fast[("2026-12-01", "misample", "USD")] == [3, Decimal("1.99") - Decimal("4.99") + Decimal("0.99")]
    # An unreadable time needs the event time: the batch is summed record by record instead.
    odd = b"\x92" + pack_event_time(0) + msgpack.packb(dict(purchase(7), purchase_time="soon"))
    assert KST.sums(TAG, b"\x91" + odd) is None


def test_a_shrunk_plan_holds_no_sums_and_sums_the_same_again(tmp_path):
    journal = tmp_path / "journal"
    write_journal(journal, [[purchase(1), purchase(2)], [purchase(3, "1400", "KRW")]])
    plan = LedgerPlan(config())
    reader = JournalReader(journal, Position(1, HEADER_SIZE))
    records = reader.read()
    reader.close()
    before = [plan.sums(r, KST, _batch(r)) for r in records]
    assert len(plan._sums) == 2
    plan.shrink()
    assert len(plan._sums) == 0 and plan._for_tag == {}
    assert [plan.sums(r, KST, _batch(r)) for r in records] == before


def test_an_output_reads_its_mark_while_the_writer_thread_settles(tmp_path):
    """A reload starts an output on the event loop (it reads its mark) while the ledger's writer
    thread settles another: each thread has its own cursor, so neither is refused."""
    import threading

    journal = tmp_path / "journal"
    ends = write_journal(journal, [[purchase(1), purchase(2)]])
    ledger = Ledger(tmp_path / "ledger.sqlite", LedgerPlan(config()), journal)
    ledger.begin(Position(1, HEADER_SIZE))
    failed: list[BaseException] = []
    done = threading.Event()

    def settle() -> None:
        try:
            for n in range(300):
                ledger.settle("out0", Tally(), Position(1, ends[0].offset + n), n)
        except BaseException as exc:  # what the other thread saw is the finding
            failed.append(exc)
        finally:
            done.set()

    writer = threading.Thread(target=settle)
    writer.start()
    while not done.is_set():
        try:
            ledger.output_mark("out1")
        except BaseException as exc:
            failed.append(exc)
            break
    writer.join()
    assert failed == []
    assert ledger.output_mark("out0")[0] == Position(1, ends[0].offset + 299)


def test_the_writer_gives_its_page_cache_back_and_still_reads_its_rows(tmp_path):
    """Every purchase of a burst is a row: once the process is quiet (agent/memory.py) the writer's
    connection gives its cached pages back to the allocator before the trim."""
    import _sqlite3
    import asyncio
    import ctypes

    from agent.ledger.store import LedgerWriter

    memory_used = ctypes.CDLL(_sqlite3.__file__).sqlite3_memory_used
    memory_used.restype = ctypes.c_int64
    writer = LedgerWriter(Ledger(tmp_path / "ledger.sqlite", LedgerPlan(config()), tmp_path / "journal"))
    rows = {(f"2026-11-{d:02d}", f"game{g}"): 1 for d in range(1, 29) for g in range(1000)}
    asyncio.run(writer.call(writer.ledger.add_duplicates, rows))
    before = memory_used()
    writer.shrink()
    assert before - memory_used() > 500_000
    counted = asyncio.run(writer.call(lambda: writer.ledger.sql.execute("SELECT count(*) FROM duplicates").fetchone()))
    assert counted == (len(rows),)
    writer.close()
