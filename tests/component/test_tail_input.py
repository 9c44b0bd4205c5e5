"""The tail input in-process, on real files and a real journal: rotation, truncation, a file
replaced under its name, and the rewind after a journal write that failed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from pathlib import Path

from agent.inputs.tail import TailInput, TailInputConfig
from agent.journal.batch import decode_entries
from agent.journal.journal import Journal
from agent.journal.reader import JournalReader
from agent.journal.record import batch_target


def tail(tmp_path: Path, ingest, **options) -> TailInput:
    cfg = TailInputConfig(
        type="tail",
        name="t",
        path=[str(tmp_path / "logs" / "*.log")],
        tag="app",
        read_from_head=True,
        stat_interval=0.05,
        rotate_wait=0.3,
        **options,
    )
    return TailInput(cfg, ingest, tmp_path / "var")


def journaled(journal: Journal) -> list[int]:
    """The ``n`` of every record journaled (the input's own position markers left out)."""
    reader = JournalReader(journal.directory)
    seen = []
    while records := reader.read():
        for record in records:
            if batch_target(record.payload) is None:
                seen += [r["n"] for _, r in decode_entries(record.payload)[1]]
    reader.close()
    return seen


def write(path: Path, numbers: range) -> None:
    with open(path, "a") as f:
        f.write("".join(json.dumps({"n": n}) + "\n" for n in numbers))


@contextlib.asynccontextmanager
async def following(tmp_path: Path, ingest, journal: Journal, first: int):
    """logs/app.log with lines 0..first-1, followed by a started tail input once they are journaled."""
    logs = tmp_path / "logs"
    logs.mkdir()
    write(logs / "app.log", range(0, first))
    source = tail(tmp_path, ingest)
    await source.start()
    try:
        await until(lambda: len(journaled(journal)) == first, "the first lines")
        yield source, logs
    finally:
        await source.stop(5)


async def until(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


async def test_a_rename_and_create_rotation_reads_every_line_once(tmp_path, ingest, journal):
    async with following(tmp_path, ingest, journal, 100) as (source, logs):
        write(logs / "app.log", range(100, 150))  # written just before the rotation: still read
        os.rename(logs / "app.log", logs / "app.log.1")  # out of the glob
        write(logs / "app.log", range(150, 200))
        await until(lambda: len(journaled(journal)) >= 200, "the rotated file's end and the new file")
        await until(lambda: len(source.files) == 1, "the rotated file released after rotate_wait")
        assert sorted(journaled(journal)) == list(range(200))
        assert source.stats.rotations == 1


async def test_a_copytruncate_reads_the_file_again_from_the_start(tmp_path, ingest, journal):
    async with following(tmp_path, ingest, journal, 50) as (source, logs):
        os.truncate(logs / "app.log", 0)
        write(logs / "app.log", range(50, 60))
        await until(lambda: len(journaled(journal)) == 60, "the lines after the truncation")
        assert journaled(journal) == list(range(60))
        assert source.stats.truncations == 1


async def test_a_file_replaced_under_its_name_is_read_to_its_end_and_the_new_one_from_zero(tmp_path, ingest, journal):
    async with following(tmp_path, ingest, journal, 30) as (source, logs):
        write(tmp_path / "new", range(100, 120))
        write(logs / "app.log", range(30, 40))  # the old file's last lines, then it is replaced
        os.replace(tmp_path / "new", logs / "app.log")
        await until(lambda: len(journaled(journal)) >= 60, "both files")
        assert sorted(journaled(journal)) == [*range(40), *range(100, 120)]


async def test_after_a_failed_journal_write_every_file_is_read_again_from_its_durable_position(
    tmp_path, ingest, journal
):
    async with following(tmp_path, ingest, journal, 20) as (source, logs):
        submit = journal.submit
        failed = []

        def failing_once(*args, **kwargs):  # the marker of the next batch: as a full disk would
            future = submit(*args, **kwargs)
            if not failed:
                failed.append(True)
                broken = asyncio.get_running_loop().create_future()
                broken.set_exception(OSError(28, "No space left on device"))
                return broken
            return future

        journal.submit = failing_once  # type: ignore[method-assign]
        write(logs / "app.log", range(20, 30))
        await until(lambda: set(journaled(journal)) >= set(range(30)), "the lines read again")
        await until(lambda: not source.checkpoints.failed, "reading resumed")
        seen = journaled(journal)
        assert set(seen) == set(range(30))  # nothing lost
        assert seen.count(25) == 2  # the batch whose write failed was read again from its durable position
        [followed] = source.files.values()
        await until(lambda: followed.pos.offset == (logs / "app.log").stat().st_size, "the position caught up")
