"""The tail input as a user runs it, in the whole agent: rotation and copytruncate while a writer
writes, kill -9, a restart across a rotation, a full journal, the segments its markers keep.
What needs no process of its own is in tests/component/test_tail_input.py."""

import collections
import os
import random
import shutil
import threading
import time

import orjson
import pytest

from tests.agentproc import (
    Agent,
    file_output,
    forward_output,
    free_port,
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
