"""/health says what an operator must act on: here, a journal whose writes fail."""

from types import SimpleNamespace

from agent.metrics import Monitor


class FakeJournal:
    write_error = None

    def is_full(self) -> bool:
        return False


def test_health_is_503_with_the_reason_while_journal_writes_fail_and_200_once_one_succeeds(tmp_path):
    journal = FakeJournal()
    app = SimpleNamespace(deliveries=[], journal=journal, paths=SimpleNamespace(delivery_snapshot=lambda g: tmp_path))
    monitor = Monitor(app, "127.0.0.1", 0)
    assert monitor.health() == (True, [])
    journal.write_error = "No space left on device"  # what Journal sets when a write fails
    assert monitor.health() == (False, ["journal: No space left on device"])
    journal.write_error = None  # and clears at the next write that succeeds
    assert monitor.health() == (True, [])
