"""The tail input in-process, on real files and a real journal: rotation, truncation, a file
replaced under its name, and the rewind after a journal write that failed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import zlib
from pathlib import Path

import pytest

from agent.inputs.tail import TailInput, TailInputConfig
from agent.journal.batch import decode_entries
from agent.journal.journal import Journal
from agent.journal.reader import JournalReader
from agent.journal.record import batch_target


def tail(tmp_path: Path, ingest, path: str | None = None, **options) -> TailInput:
    settings = {"tag": "app", "read_from_head": True, "stat_interval": 0.05, "rotate_wait": 0.3, **options}
    cfg = TailInputConfig.validate(
        dict(type="tail", name="t", path=[path or str(tmp_path / "logs" / "*.log")], **settings)
    )
    return TailInput(cfg, ingest, tmp_path / "var")


def journaled(journal: Journal, key: str = "n") -> list:
    """``record[key]`` of every record journaled (the input's own position markers left out)."""
    return [r[key] for _, r in journaled_records(journal)]


def journaled_records(journal: Journal) -> list[tuple[str, dict]]:
    """(tag, record) of every record journaled, in order (the input's own position markers left out)."""
    reader = JournalReader(journal.directory)
    seen: list[tuple[str, dict]] = []
    while records := reader.read():
        for record in records:
            if batch_target(record.payload) is None:
                tag, entries = decode_entries(record.payload)
                seen += [(tag, r) for _, r in entries]
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


# -- what a user sees of the tail input, without a process of its own ------------------------

PAD = "p" * 60


def line(seq: int, **extra) -> bytes:
    return json.dumps({"seq": seq, "transaction_id": f"T-{seq}", "pad": PAD, **extra}).encode() + b"\n"


def open_files() -> list[str]:
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the listing's own descriptor, closed by now
            pass
    return targets


def dead_letters(tmp_path: Path) -> list[dict]:
    path = tmp_path / "deadletter" / "t.jsonl"
    return [json.loads(x) for x in path.read_bytes().splitlines()] if path.exists() else []


def position(tmp_path: Path, path: Path) -> int | None:
    try:
        files = json.loads((tmp_path / "var" / "tail" / "t.pos.json").read_bytes())["files"]
    except (FileNotFoundError, ValueError):
        return None
    return next((f["offset"] for f in files if f["path"] == str(path)), None)


async def test_lines_from_head_a_partial_line_waits_and_bad_lines_are_dead_lettered(tmp_path, ingest, journal):
    logs = tmp_path / "logs" / "samplegame"
    logs.mkdir(parents=True)
    log = logs / "purchase.json"
    log.write_bytes(line(1) + b"not json at all\n" + line(2) + b"[1, 2]\n" + line(3))
    with open(log, "ab") as f:  # invalid UTF-8, written raw
        f.write(b'{"seq": 4, "name": "caf\xe9"}\n')
    (logs / "purchase-archived.json").write_bytes(line(1000))  # excluded
    source = tail(
        tmp_path,
        ingest,
        str(tmp_path / "logs/*/purchase*.json"),
        tag="ha2union.game.{game}.purchase_log",
        tag_regex="/logs/(?P<game>[^/]+)/",
        exclude_path=[str(tmp_path / "logs/*/purchase-archived*")],
        path_key="source_file",
    )
    await source.start()
    try:
        await until(lambda: len(journaled(journal, "seq")) == 4, "the four good lines")
        records = journaled_records(journal)
        assert {tag for tag, _ in records} == {"ha2union.game.samplegame.purchase_log"}
        assert {r["source_file"] for _, r in records} == {str(log)}
        assert [r["name"] for _, r in records if r["seq"] == 4] == ["caf\ufffd"]
        # A partial line waits for its newline, and the position stays before it.
        size_before = log.stat().st_size
        with open(log, "ab") as f:
            f.write(line(5)[:20])
        await until(lambda: position(tmp_path, log) == size_before, "the position checkpointed")
        await asyncio.sleep(0.3)
        assert 5 not in journaled(journal, "seq") and position(tmp_path, log) == size_before
        with open(log, "ab") as f:
            f.write(line(5)[20:])
        await until(lambda: 5 in journaled(journal, "seq"), "the line once whole")
        # A file that appears after the start is read from its first line.
        other = tmp_path / "logs" / "othergame"
        other.mkdir()
        (other / "purchase-2.json").write_bytes(line(6) + line(7))
        await until(lambda: {6, 7} <= set(journaled(journal, "seq")), "the new file's lines")
        later = {tag for tag, r in journaled_records(journal) if r["seq"] >= 6}
        assert later == {"ha2union.game.othergame.purchase_log"}
        assert (source.stats.invalid_utf8_lines, source.stats.lines_dead_lettered) == (1, 2)
        await until(lambda: len(dead_letters(tmp_path)) == 2, "the dead letters written")
    finally:
        await source.stop(5)
    first_bad = len(line(1))
    assert [
        (d["record"]["file"], d["record"]["offset"], d["reason"].split(":")[0], d["record"]["line"])
        for d in dead_letters(tmp_path)
    ] == [
        (str(log), first_bad, "invalid_json", "not json at all"),
        (str(log), first_bad + 16 + len(line(2)), "not_an_object", "[1, 2]"),
    ]
    assert sorted(journaled(journal, "seq")) == list(range(1, 8))


async def test_without_read_from_head_a_file_found_at_start_is_read_from_its_end(tmp_path, ingest, journal):
    log = tmp_path / "app.log"
    log.write_bytes(line(1) + line(2))
    source = tail(tmp_path, ingest, str(log), tag="tail.*", read_from_head=False)
    await source.start()
    try:
        assert len(source.files) == 1
        with open(log, "ab") as f:
            f.write(line(3))
        await until(lambda: journaled(journal, "seq") == [3], "the line written after the start")
        [(tag, _)] = journaled_records(journal)
        assert tag == "tail." + str(log).replace("/", ".").lstrip(".")
    finally:
        await source.stop(5)


async def test_a_line_longer_than_max_line_size_is_dead_lettered_and_the_next_lines_go_on(tmp_path, ingest, journal):
    log = tmp_path / "big.log"
    huge = b'{"seq": 99, "blob": "' + b"x" * (10 * 1024 * 1024) + b'"}\n'
    log.write_bytes(line(1) + huge + line(2))
    source = tail(tmp_path, ingest, str(log), max_line_size="1MiB")
    await source.start()
    try:
        await until(lambda: journaled(journal, "seq") == [1, 2], "the lines around the long one")
        await until(lambda: len(dead_letters(tmp_path)) == 1, "the long line dead-lettered")
    finally:
        await source.stop(5)
    [dead] = dead_letters(tmp_path)
    assert dead["reason"] == f"line_too_long: {len(huge)} bytes"
    assert dead["record"]["offset"] == len(line(1)) and len(dead["record"]["line"]) == 1024


async def test_a_file_deleted_while_being_read_is_read_to_its_end_and_closed(tmp_path, ingest, journal):
    log = tmp_path / "doomed.log"
    total = 50_000
    log.write_bytes(b"".join(line(seq) for seq in range(total)))
    source = tail(tmp_path, ingest, str(log))
    await source.start()
    try:
        log.unlink()
        await until(lambda: len(journaled(journal, "seq")) == total, "every line of the deleted file", 30)
        await until(lambda: not source.files, "the deleted file closed")
        assert not any("doomed.log" in target for target in open_files())  # its disk space is freed
    finally:
        await source.stop(5)
    assert sorted(journaled(journal, "seq")) == list(range(total))


async def test_a_thousand_files_in_one_glob_are_all_read_and_followed(tmp_path, ingest, journal):
    logs = tmp_path / "many"
    logs.mkdir()
    n = 1000
    for i in range(n):
        (logs / f"f{i:04d}.log").write_bytes(line(2 * i) + line(2 * i + 1))
    source = tail(tmp_path, ingest, str(logs / "*.log"))
    await source.start()
    try:
        await until(lambda: len(journaled(journal, "seq")) == 2 * n, "every file's lines", 30)
        with open(logs / "f0777.log", "ab") as f:
            f.write(line(5000))
        await until(lambda: 5000 in journaled(journal, "seq"), "a line added to one of them", 5)
        assert len(source.files) == n
    finally:
        await source.stop(5)
    assert sorted(journaled(journal, "seq")) == sorted({*range(2 * n), 5000})


async def test_writes_to_a_file_no_glob_matches_cost_no_rescan(tmp_path, ingest, journal):
    """An app writing 50 lines/s to other.txt beside 1,000 followed *.log files: inotify reports
    every write, and none of them can change the followed set, so none globs again (each did,
    on the event loop: 99% CPU with 15,000 files). A new *.log is still found at once."""
    logs = tmp_path / "many"
    logs.mkdir()
    n = 1000
    for i in range(n):
        (logs / f"f{i:04d}.log").write_bytes(line(i))
    source = tail(tmp_path, ingest, str(logs / "*.log"))
    await source.start()
    try:
        await until(lambda: len(journaled(journal, "seq")) == n, "every file's line", 30)
        await asyncio.sleep(1.5)  # past the look again once the watch has settled
        before = source.stats.scans
        with open(logs / "other.txt", "ab", buffering=0) as other:
            for i in range(150):
                other.write(b"unrelated line %d\n" % i)
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)
        assert source.stats.scans == before
        (logs / "new.log").write_bytes(line(5000))  # a name the glob matches: looked for, and found
        await until(lambda: 5000 in journaled(journal, "seq"), "the new file", 5)
        assert 1 <= source.stats.scans - before <= 3
    finally:
        await source.stop(5)


@pytest.mark.parametrize("same_file", [True, False])
async def test_a_saved_position_is_used_only_for_the_file_it_was_taken_from(tmp_path, ingest, journal, same_file):
    """ext4 reuses a deleted file's inode at once: the fingerprint of the first bytes tells them apart."""
    log = tmp_path / "app.log"
    log.write_bytes(line(1) + line(2) + line(3))
    st = log.stat()
    head = log.read_bytes()[:64]
    saved = {
        "version": 1,
        "input": "t",
        "journal": None,
        "files": [
            {
                "dev": st.st_dev,
                "ino": st.st_ino,
                "path": str(log),
                "offset": len(line(1)),
                "fp_len": len(head),
                "fp": zlib.crc32(head if same_file else b"another file's" + head[14:]),
                "released": False,
            }
        ],
    }
    (tmp_path / "var" / "tail").mkdir(parents=True)
    (tmp_path / "var" / "tail" / "t.pos.json").write_bytes(json.dumps(saved).encode())
    source = tail(tmp_path, ingest, str(log))
    await source.start()
    try:
        await until(lambda: {2, 3} <= set(journaled(journal, "seq")), "the lines after the position")
        await asyncio.sleep(0.3)
    finally:
        await source.stop(5)
    # The same file resumes after line 1; another file with the old inode is read from its start.
    assert journaled(journal, "seq") == ([2, 3] if same_file else [1, 2, 3])


async def test_a_uid_past_64_bits_is_refused_with_its_reason_not_sent_as_a_float(tmp_path, ingest, journal):
    log = tmp_path / "big.log"
    log.write_bytes(line(1) + b'{"seq": 2, "uid": 18446744073709551616}\n' + line(3))
    source = tail(tmp_path, ingest, str(log))
    await source.start()
    try:
        await until(lambda: journaled(journal, "seq") == [1, 3], "the lines around it")
        await until(lambda: len(dead_letters(tmp_path)) == 1, "the line dead-lettered")
    finally:
        await source.stop(5)
    [dead] = dead_letters(tmp_path)
    assert dead["reason"].startswith("integer_out_of_range") and dead["record"]["offset"] == len(line(1))
    assert all(type(r.get("uid", 0)) is int for _, r in journaled_records(journal))
