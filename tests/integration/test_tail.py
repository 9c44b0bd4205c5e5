"""The tail input as a user runs it: real files, rotation while writing, kill -9, many files."""

import collections
import os
import random
import shutil
import threading
import time
from pathlib import Path

import orjson
import pytest

from tests.agentproc import (
    MONITOR,
    Agent,
    file_output,
    forward_output,
    free_port,
    get_json,
    journal_records,
    tail_input,
    wait_until,
)

PAD = "p" * 60


def line(seq: int, **extra) -> bytes:
    return orjson.dumps({"seq": seq, "transaction_id": f"T-{seq}", "pad": PAD, **extra}) + b"\n"


def seqs(lines) -> collections.Counter:
    return collections.Counter(item["record"]["seq"] for item in lines)


def exactly_once(counts: collections.Counter, expected: range | set) -> None:
    expected = set(expected)
    missing = expected - set(counts)
    twice = {s: n for s, n in counts.items() if n > 1}
    assert not missing, f"{len(missing)} lines lost, e.g. {sorted(missing)[:10]}"
    assert not twice, f"{len(twice)} lines read more than once, e.g. {sorted(twice.items())[:10]}"
    assert set(counts) == expected


def positions(agent: Agent, name: str = "tail.0") -> dict:
    path = agent.workdir / "var" / "tail" / f"{name}.pos.json"
    try:
        return {f["path"]: f["offset"] for f in orjson.loads(path.read_bytes())["files"]}
    except (FileNotFoundError, orjson.JSONDecodeError):
        return {}


def test_lines_from_head_partial_lines_wait_and_bad_lines_are_dead_lettered(tmp_path):
    logs = tmp_path / "logs" / "samplegame"
    logs.mkdir(parents=True)
    log = logs / "purchase.json"
    log.write_bytes(line(1) + b"not json at all\n" + line(2) + b"[1, 2]\n" + line(3))
    with open(log, "ab") as f:  # invalid UTF-8, written raw
        f.write(b'{"seq": 4, "name": "caf\xe9"}\n')
    (logs / "purchase-archived.json").write_bytes(line(1000))  # excluded
    agent = Agent(
        tmp_path,
        tail_input(
            str(tmp_path / "logs/*/purchase*.json"),
            tag="ha2union.game.{game}.purchase_log",
            tag_regex="/logs/(?P<game>[^/]+)/",
            read_from_head=True,
            exclude_path=[str(tmp_path / "logs/*/purchase-archived*")],
            path_key="source_file",
        )
        + file_output()
        + MONITOR,
    )
    with agent:
        lines = agent.wait_for_records("seq", {1, 2, 3, 4})
        assert {item["tag"] for item in lines} == {"ha2union.game.samplegame.purchase_log"}
        assert {item["record"]["source_file"] for item in lines} == {str(log)}
        assert [item["record"]["name"] for item in lines if item["record"]["seq"] == 4] == ["caf\ufffd"]

        # A partial line waits for its newline, and the position stays before it.
        size_before = log.stat().st_size
        with open(log, "ab") as f:
            f.write(line(5)[:20])
        time.sleep(1.0)
        assert 5 not in seqs(agent.output_lines())
        assert positions(agent)[str(log)] == size_before
        with open(log, "ab") as f:
            f.write(line(5)[20:])
        agent.wait_for_records("seq", {5})

        # A file that appears after the start is read from its first line.
        other = tmp_path / "logs" / "othergame"
        other.mkdir()
        (other / "purchase-2.json").write_bytes(line(6) + line(7))
        lines = agent.wait_for_records("seq", {6, 7})
        assert {item["tag"] for item in lines if item["record"]["seq"] >= 6} == {"ha2union.game.othergame.purchase_log"}

        status, body = get_json(agent.monitor_port, "/metrics")
        assert 'hive_agent_tail_invalid_utf8_lines_total{component="tail.0"} 1.0' in body
        assert (
            'hive_agent_component_dead_lettered_events_total{component="tail.0",kind="input",type="tail"} 2.0' in body
        )
        assert agent.stop() == 0
    dead = [orjson.loads(x) for x in (tmp_path / "var/deadletter/tail.0.jsonl").read_bytes().splitlines()]
    first_bad = len(line(1))
    assert [
        (d["record"]["file"], d["record"]["offset"], d["reason"].split(":")[0], d["record"]["line"]) for d in dead
    ] == [
        (str(log), first_bad, "invalid_json", "not json at all"),
        (str(log), first_bad + 16 + len(line(2)), "not_an_object", "[1, 2]"),
    ]
    assert "file " + str(log) + " offset " + str(first_bad) + ": invalid_json" in agent.log()
    exactly_once(seqs(agent.output_lines()), range(1, 8))


def test_without_read_from_head_a_file_found_at_start_is_read_from_its_end(tmp_path):
    log = tmp_path / "app.log"
    log.write_bytes(line(1) + line(2))
    with Agent(tmp_path, tail_input(str(log)) + file_output()) as agent:
        agent.wait_for_log("following .*app.log from offset")
        with open(log, "ab") as f:
            f.write(line(3))
        lines = agent.wait_for_records("seq", {3})
        assert lines[0]["tag"] == "tail." + str(log).replace("/", ".").lstrip(".")
        assert agent.stop() == 0
    assert seqs(agent.output_lines()) == {3: 1}


def test_a_line_longer_than_max_line_size_is_dead_lettered_and_the_next_lines_go_on(tmp_path):
    log = tmp_path / "big.log"
    huge = b'{"seq": 99, "blob": "' + b"x" * (10 * 1024 * 1024) + b'"}\n'
    log.write_bytes(line(1) + huge + line(2))
    with Agent(tmp_path, tail_input(str(log), read_from_head=True, max_line_size="1MiB") + file_output()) as agent:
        agent.wait_for_records("seq", {1, 2})
        agent.wait_for_log("line_too_long")
        assert agent.stop() == 0
    assert seqs(agent.output_lines()) == {1: 1, 2: 1}
    dead = orjson.loads((tmp_path / "var/deadletter/tail.0.jsonl").read_bytes())
    assert dead["reason"] == f"line_too_long: {len(huge)} bytes"
    assert dead["record"]["offset"] == len(line(1)) and len(dead["record"]["line"]) == 1024


@pytest.mark.parametrize("pattern,follow_inodes", [("app.log", False), ("app.log*", True), ("app.log*", False)])
def test_rename_and_create_rotation_while_writing_reads_every_line_exactly_once(tmp_path, pattern, follow_inodes):
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    total, rotate_every = 30_000, 3_000

    log.write_bytes(b"")  # the log exists before the agent starts, as on a host

    def writer():
        f = open(log, "ab", buffering=0)
        generation = 0
        for seq in range(total):
            f.write(line(seq))
            if seq % rotate_every == rotate_every - 1:
                generation += 1
                os.rename(log, logs / f"app.log.{generation}")
                # A logger reopens its file a moment after the rename: a few lines still land in the old one.
                for _ in range(5):
                    seq_extra = next(extra)
                    f.write(line(seq_extra))
                f.close()
                f = open(log, "ab", buffering=0)
                # A generation that is created and renamed away before the agent's next look is never
                # seen by any tailer that does not glob the rotated names (Fluentd's in_tail alike):
                # let each live at least a few notification intervals, as any real log does.
                time.sleep(0.2)
            if seq % 200 == 0:
                time.sleep(0.002)
        f.close()

    extra = iter(range(total, total + 1000))
    agent = Agent(
        tmp_path,
        tail_input(str(logs / pattern), read_from_head=True, rotate_wait="1s", follow_inodes=follow_inodes)
        + file_output(),
    )
    with agent:
        thread = threading.Thread(target=writer)
        thread.start()
        thread.join()
        rotations = total // rotate_every
        expected = set(range(total)) | set(range(total, total + rotations * 5))
        agent.wait_for_records("seq", expected)
        time.sleep(1.5)  # past rotate_wait: a file read twice would show now
        assert agent.stop() == 0
    exactly_once(seqs(agent.output_lines()), expected)
    if pattern == "app.log" or not follow_inodes:
        # Noticed as rotations (a generation renamed before any scan saw it is simply a new file).
        assert agent.log().count("was rotated away") >= 1


def test_copytruncate_while_writing_loses_only_unread_lines_at_each_truncate(tmp_path):
    """copytruncate has an inherent window: lines written after the agent's last read and before the
    truncate are only in the copy. The test shows that only those go missing, and counts them."""
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    total, rotate_every = 30_000, 3_000
    copies: list[list[int]] = []

    def writer():
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)  # copytruncate needs O_APPEND writers
        generation: list[int] = []
        for seq in range(total):
            os.write(fd, line(seq))
            generation.append(seq)
            if seq % rotate_every == rotate_every - 1:
                shutil.copyfile(log, logs / f"copy.{len(copies)}")
                os.truncate(log, 0)
                copies.append(generation)
                generation = []
            if seq % 100 == 0:
                time.sleep(0.01)  # about 10,000 lines a second
        os.write(fd, line(total))  # the last line, never truncated: when it is in, the agent is done
        os.close(fd)

    agent = Agent(tmp_path, tail_input(str(log), read_from_head=True) + file_output())
    with agent:
        thread = threading.Thread(target=writer)
        thread.start()
        thread.join()
        agent.wait_for_records("seq", {total})
        time.sleep(1.0)
        assert agent.stop() == 0
    counts = seqs(agent.output_lines())
    assert not {s: n for s, n in counts.items() if n > 1}, "a line was read twice"
    lost = set(range(total + 1)) - set(counts)
    for generation in copies:
        missing = [s for s in generation if s in lost]
        # Only a suffix of a generation can be missing: the lines not read yet when it was truncated.
        assert missing == generation[len(generation) - len(missing) :], f"lost lines not at the end: {missing[:10]}"
    assert lost <= {s for g in copies for s in g}
    print(
        f"copytruncate: {len(lost)} of {total} lines lost over {len(copies)} truncations "
        f"(at most {max((sum(1 for s in g if s in lost) for g in copies), default=0)} at one)"
    )
    assert agent.log().count("was truncated") >= 1


def test_a_file_deleted_while_being_read_is_read_to_its_end_and_closed(tmp_path):
    log = tmp_path / "doomed.log"
    total = 200_000
    with open(log, "wb") as f:
        f.write(b"".join(line(seq) for seq in range(total)))
    with Agent(tmp_path, tail_input(str(log), read_from_head=True) + file_output()) as agent:
        agent.wait_for_log("following .*doomed.log")
        log.unlink()
        agent.wait_for_records("seq", set(range(total)))
        agent.wait_for_log(r"doomed.log \(inode \d+\) deleted; read to offset")

        def held_open():
            fds = Path(f"/proc/{agent.proc.pid}/fd")
            return [os.readlink(p) for p in fds.iterdir() if "doomed.log" in os.readlink(p)]

        assert not held_open()
        assert agent.stop() == 0
    exactly_once(seqs(agent.output_lines()), range(total))


def test_sigkill_mid_file_and_restart_journal_every_line_exactly_once(tmp_path):
    """Lines are checked in the journal itself (the output is blocked): the tail's own guarantee,
    without the output's at-least-once re-deliveries after a kill."""
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    log = tmp_path / "game.log"
    initial = 150_000
    with open(log, "wb") as f:
        f.write(b"".join(line(seq) for seq in range(initial)))
    written = [initial]
    stop = threading.Event()

    def writer():
        with open(log, "ab", buffering=0) as f:
            while not stop.is_set():
                f.write(b"".join(line(s) for s in range(written[0], written[0] + 50)))
                written[0] += 50
                time.sleep(0.005)

    blocked = forward_output([("127.0.0.1", free_port())], name="blocked")
    agent = Agent(tmp_path, tail_input(str(log), read_from_head=True) + blocked)
    thread = threading.Thread(target=writer)
    thread.start()
    kills = 0
    try:
        for _ in range(3):
            agent.start()
            time.sleep(rng.uniform(0.3, 1.0))
            agent.kill()
            kills += 1
        stop.set()
        thread.join()
        agent.start()
        size = log.stat().st_size
        wait_until(
            lambda: positions(agent).get(str(log)) == size, timeout=30, what="the position file at the end of the file"
        )
        agent.kill()
    finally:
        stop.set()
        agent.kill()
    assert kills == 3
    counts = collections.Counter(record["seq"] for tag, record in journal_records(tmp_path / "var"))
    exactly_once(counts, range(written[0]))


def test_a_thousand_files_in_one_glob_are_all_read_and_followed(tmp_path):
    logs = tmp_path / "many"
    logs.mkdir()
    n = 1000
    for i in range(n):
        (logs / f"f{i:04d}.log").write_bytes(line(2 * i) + line(2 * i + 1))
    with Agent(tmp_path, tail_input(str(logs / "*.log"), read_from_head=True) + file_output() + MONITOR) as agent:
        agent.wait_for_records("seq", set(range(2 * n)))
        with open(logs / "f0777.log", "ab") as f:
            f.write(line(5000))
        agent.wait_for_records("seq", {5000}, timeout=5)
        status, body = get_json(agent.monitor_port, "/metrics")
        assert 'hive_agent_tail_files{component="tail.0"} 1000.0' in body
        assert agent.stop() == 0
    exactly_once(seqs(agent.output_lines()), set(range(2 * n)) | {5000})
    assert len(positions(agent)) == n


def test_writes_to_a_file_no_glob_matches_cost_no_rescan(tmp_path):
    """An app writing 50 lines/s to other.txt beside 1,000 followed *.log files: inotify reports
    every write, and none of them can change the followed set, so none globs again (each did,
    on the event loop: 99% CPU with 15,000 files). A new *.log is still found at once."""
    from tests.integration.test_monitor import metric

    logs = tmp_path / "many"
    logs.mkdir()
    n = 1000
    for i in range(n):
        (logs / f"f{i:04d}.log").write_bytes(line(i))
    with Agent(tmp_path, tail_input(str(logs / "*.log"), read_from_head=True) + file_output() + MONITOR) as agent:
        agent.wait_for_records("seq", set(range(n)))
        time.sleep(1.5)  # past the look again once the watch has settled

        def scans() -> float:
            return metric(get_json(agent.monitor_port, "/metrics")[1], "hive_agent_tail_scans_total")

        before = scans()
        with open(logs / "other.txt", "ab", buffering=0) as other:
            for i in range(150):
                other.write(b"unrelated line %d\n" % i)
                time.sleep(0.02)
        time.sleep(0.5)
        assert scans() - before == 0
        (logs / "new.log").write_bytes(line(5000))  # a name the glob matches: looked for, and found
        agent.wait_for_records("seq", {5000}, timeout=5)
        assert 1 <= scans() - before <= 3
        assert agent.stop() == 0


def test_restart_resumes_where_it_stopped_even_in_a_file_rotated_while_down(tmp_path):
    log = tmp_path / "app.log"
    log.write_bytes(line(1) + line(2))
    agent = Agent(
        tmp_path, tail_input(str(tmp_path / "app.log*"), read_from_head=True, follow_inodes=True) + file_output()
    )
    with agent:
        agent.wait_for_records("seq", {1, 2})
        assert agent.stop() == 0
    with open(log, "ab") as f:
        f.write(line(3))
    os.rename(log, tmp_path / "app.log.1")  # rotated while the agent is down
    log.write_bytes(line(4))
    with agent:
        agent.wait_for_records("seq", {1, 2, 3, 4})
        time.sleep(0.5)
        assert agent.stop() == 0
    # The rotated file is known by its inode: read on from where the agent stopped, not again from its start.
    exactly_once(seqs(agent.output_lines()), {1, 2, 3, 4})


def test_a_full_journal_pauses_reading_and_nothing_is_skipped(tmp_path):
    port = free_port()
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "big.log"
    total = 5000
    log.write_bytes(b"".join(line(seq) for seq in range(total)))
    size = log.stat().st_size
    tail = Agent(
        tmp_path / "tail",
        tail_input(str(log), read_from_head=True, read_bytes_limit="8KiB")
        + forward_output([("127.0.0.1", port)], retry_wait="100ms", retry_max_interval="300ms", recover_wait="300ms"),
        journal='max_bytes = "96KiB"\nsegment_bytes = "16KiB"\n',
    )
    collector = Agent(
        tmp_path / "collector", f'[[inputs]]\ntype = "forward"\nbind = "127.0.0.1"\nport = {port}\n' + file_output()
    )
    try:
        tail.start()
        tail.wait_for_log("no server took the chunks")
        time.sleep(1.0)
        stalled = positions(tail).get(str(log), 0)
        time.sleep(1.0)
        assert 0 < positions(tail).get(str(log), 0) == stalled < size  # paused where the journal filled up
        journal = sum(p.stat().st_size for p in (tmp_path / "tail/var/journal").glob("*.seg"))
        assert journal < 96 * 1024 + 16 * 1024
        collector.start()
        collector.wait_for_records("seq", set(range(total)))
        wait_until(lambda: positions(tail).get(str(log)) == size, timeout=30, what="the whole file read")
        assert tail.stop() == 0
        assert collector.stop() == 0
    finally:
        tail.kill()
        collector.kill()
    exactly_once(seqs(collector.output_lines()), range(total))


@pytest.mark.parametrize("same_file", [True, False])
def test_a_saved_position_is_used_only_for_the_file_it_was_taken_from(tmp_path, same_file):
    """ext4 reuses a deleted file's inode at once: the fingerprint of the first bytes tells them apart."""
    import zlib

    log = tmp_path / "app.log"
    log.write_bytes(line(1) + line(2) + line(3))
    st = log.stat()
    head = log.read_bytes()[:64]
    saved = {
        "version": 1,
        "input": "tail.0",
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
    (tmp_path / "var" / "tail" / "tail.0.pos.json").write_bytes(orjson.dumps(saved))
    with Agent(tmp_path, tail_input(str(log), read_from_head=True) + file_output()) as agent:
        agent.wait_for_records("seq", {2, 3})
        time.sleep(0.5)
        assert agent.stop() == 0
    # The same file resumes after line 1; another file with the old inode is read from its start.
    assert seqs(agent.output_lines()) == ({2: 1, 3: 1} if same_file else {1: 1, 2: 1, 3: 1})


def test_journal_segments_after_the_position_file_are_kept_for_its_markers(tmp_path):
    """Outputs that have caught up let segments go; the ones holding markers the position file
    does not have yet must stay, or a kill -9 would resume from an older position."""
    from agent.journal.segment import segment_path

    log = tmp_path / "app.log"
    stop = threading.Event()

    def writer():
        seq = 0
        with open(log, "ab", buffering=0) as f:
            while not stop.is_set():
                f.write(b"".join(line(s) for s in range(seq, seq + 50)))
                seq += 50
                time.sleep(0.002)

    log.write_bytes(b"")
    # The default stat_interval (3 s) spaces checkpoints well behind the file output's cursor.
    agent = Agent(
        tmp_path,
        tail_input(str(log), read_from_head=True, stat_interval="3s") + file_output(),
        journal='segment_bytes = "16KiB"\nmax_bytes = "256MiB"\n',
    )
    thread = threading.Thread(target=writer)
    try:
        agent.start()
        thread.start()
        agent.wait_for_output(20_000, timeout=60)
        time.sleep(2.0)  # many segments have rolled and been collected behind the file output
        agent.kill()
    finally:
        stop.set()
        thread.join()
        agent.kill()
    pinned = orjson.loads((tmp_path / "var/tail/tail.0.pos.json").read_bytes())["journal"]["segment"]
    segments = sorted(int(p.stem) for p in (tmp_path / "var/journal").glob("*.seg"))
    assert segments[-1] - segments[0] > 0, "no segment rolled: the test did not exercise collection"
    assert segment_path(tmp_path / "var/journal", pinned).exists(), (pinned, segments[:5])
