"""The dead-letter file stays a file of whole lines: a full disk mid-write, or a crash, never
glues one dead letter to another, and a reader skips (and counts) a line that is none."""

from __future__ import annotations

import errno
import os

import pytest

from agent.deadletter import DeadLetterStore


def letter(i: int) -> tuple[str, int, dict, str]:
    return ("t.dead", 1_700_000_000 * 10**9 + i, {"seq": i, "pad": "x" * 200}, f"HTTP 400 number {i}")


def test_a_write_cut_short_by_a_full_disk_is_taken_back_and_the_resend_stands_alone(tmp_path, monkeypatch):
    store = DeadLetterStore(tmp_path / "deadletter")
    store.write_records("out", [letter(1)])
    size = store.path("out").stat().st_size
    real_write = os.write

    def half_then_full(fd, data):
        if len(data) > 10:
            real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OSError) as failed:
        store.write_records("out", [letter(2)])
    assert failed.value.errno == errno.ENOSPC
    monkeypatch.setattr(os, "write", real_write)
    assert store.path("out").stat().st_size == size  # back to the last whole line
    store.write_records("out", [letter(2)])  # the sender's resend
    assert [d["record"]["seq"] for d in store.read("out")] == [1, 2]


def test_a_line_torn_by_a_crash_is_skipped_counted_and_kept_through_a_replay(tmp_path):
    store = DeadLetterStore(tmp_path / "deadletter")
    store.write_records("out", [letter(1)])
    with open(store.path("out"), "ab") as f:
        f.write(b'{"output": "out", "reason": "HTTP 4')  # the process died here
    store.write_records("out", [letter(2), letter(3)])
    assert [d["record"]["seq"] for d in store.read("out")] == [1, 2, 3]
    summary = store.summary()["out"]
    assert summary["count"] == 3 and summary["unreadable"] == 1
    n, spool = store.take_for_replay("out", "number 2")
    assert n == 1 and spool is not None
    left = store.path("out").read_bytes().splitlines()
    assert len(left) == 3 and left[-1] == b'{"output": "out", "reason": "HTTP 4'  # kept for a person to see
    assert [d["record"]["seq"] for d in store.read("out")] == [1, 3]
