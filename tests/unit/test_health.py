"""/health says what an operator must act on, by one rule (agent/health.py)."""

from types import SimpleNamespace

import msgspec

from agent import health
from agent.delivery.snapshot import OutputSnapshot
from agent.monitor.server import Monitor

S = 1_000_000_000  # ns
NOW = 1_800_000_000 * S
CALM = health.JournalState(size_bytes=0, max_bytes=1000, write_error=None)


class FakeJournal:
    write_error = None
    size_bytes = 0
    max_bytes = 1000


def judge(outputs=None, journal=CALM, **overrides):
    args = dict(
        now_ns=NOW,
        unhealthy_after=60.0,
        outputs=outputs or {},
        snapshot_at_ns=NOW,
        deliveries_down=[],
        dead_tasks={},
        journal=journal,
    )
    args.update(overrides)
    return health.reasons(**args)


def test_health_is_503_with_the_reason_while_journal_writes_fail_and_200_once_one_succeeds(tmp_path):
    journal = FakeJournal()
    app = SimpleNamespace(deliveries=[], journal=journal, paths=SimpleNamespace(delivery_snapshot=lambda g: tmp_path))
    monitor = Monitor(app, "127.0.0.1", 0)
    assert monitor.health() == (True, [])
    journal.write_error = "No space left on device"  # what Journal sets when a write fails
    assert monitor.health() == (False, ["journal: No space left on device"])
    journal.write_error = None  # and clears at the next write that succeeds
    assert monitor.health() == (True, [])


def test_an_output_is_judged_by_its_oldest_unsent_event_and_its_last_success_not_one_try():
    stuck = OutputSnapshot(oldest_pending_ns=NOW - 61 * S, last_success_ns=None, last_error="server down")
    [reason] = judge({"hive": stuck})
    assert reason.startswith("output hive has never delivered") and "server down" in reason
    # Retrying, but the backlog is young: not yet.
    assert judge({"hive": msgspec.structs.replace(stuck, oldest_pending_ns=NOW - 30 * S)}) == []
    # An old backlog that still moves (a success 5 s ago) is slow, not broken.
    assert judge({"hive": msgspec.structs.replace(stuck, last_success_ns=NOW - 5 * S)}) == []
    [reason] = judge({"hive": msgspec.structs.replace(stuck, last_success_ns=NOW - 90 * S)})
    assert "delivered nothing for 90s" in reason
    assert judge({"hive": OutputSnapshot()}) == []  # nothing waits


def test_paused_outputs_dead_tasks_processes_and_a_nearly_full_journal_each_name_their_part():
    found = judge(
        {"af": OutputSnapshot(paused=True, last_error="HTTP 401")},
        deliveries_down=[1],
        dead_tasks={"journal-collector": "OSError: EIO"},
        journal=health.JournalState(size_bytes=950, max_bytes=1000, write_error=None),
        snapshot_at_ns=NOW - 6 * S,
    )
    assert found == [
        "delivery process 1 is down",
        "the delivery process has not reported for more than 5s",
        "output af is paused (the destination refuses our credentials): HTTP 401",
        "task journal-collector died: OSError: EIO",
        "the journal is 95% full (950 of max_bytes 1000): inputs are held back at 100%",
    ]
    assert judge(journal=health.JournalState(size_bytes=899, max_bytes=1000, write_error=None)) == []
    assert judge(journal=health.JournalState(size_bytes=1000, max_bytes=1000, write_error=None)) == [
        "the journal is full: inputs are held back"
    ]
