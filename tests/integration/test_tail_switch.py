"""Switching a host from td-agent (Fluentd) or Fluent Bit: their tail positions are taken over
at the first start, so every line after where they stopped arrives once and none before it."""

import os
import sqlite3
import time

import pytest

from agent.errors import ConfigError
from tests.agentproc import Agent, file_output, tail_input
from tests.integration.test_tail import exactly_once, line, seqs


def write_lines(path, seqs_) -> list[int]:
    """Write the lines; returns the offset where each starts."""
    offsets, at = [], 0
    with open(path, "wb") as f:
        for s in seqs_:
            offsets.append(at)
            data = line(s)
            f.write(data)
            at += len(data)
    return offsets


def host_as_the_peer_left_it(logs):
    """app.log (0-9) read to line 4; app.log.1 (100-109), rotated, read to line 106; other.log
    (200-209), which the peer no longer watches; and an entry of a file that is gone."""
    logs.mkdir()
    current = write_lines(logs / "app.log", range(10))
    rotated = write_lines(logs / "app.log.1", range(100, 110))
    write_lines(logs / "other.log", range(200, 210))
    ino = {name: os.stat(logs / name).st_ino for name in ("app.log", "app.log.1", "other.log")}
    return {
        "app.log": (ino["app.log"], current[4]),
        "app.log.1": (ino["app.log.1"], rotated[6]),
        "other.log": (ino["other.log"], None),
    }


def fluentd_pos_file(path, logs, state) -> None:
    ino, offset = state["app.log"]
    rot_ino, rot_offset = state["app.log.1"]
    other_ino, _ = state["other.log"]
    lines = [
        f"{logs}/app.log\t{0:016x}\t{ino:016x}",  # an older entry of the same file: the later one counts
        f"{logs}/app.log\t{rot_offset:016x}\t{rot_ino:016x}",  # the rotated file, under the name it had
        f"{logs}/app.log\t{offset:016x}\t{ino:016x}",
        f"{logs}/other.log\tffffffffffffffff\t{other_ino:016x}",  # unwatched
        f"{logs}/gone.log\t{123:016x}\t{999_999_999:016x}",
    ]
    path.write_text("\n".join(lines) + "\n")


def fluentbit_db(path, logs, state) -> None:
    ino, offset = state["app.log"]
    rot_ino, rot_offset = state["app.log.1"]
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE in_tail_files (id INTEGER PRIMARY KEY, name TEXT NOT NULL, offset INTEGER, inode INTEGER,"
        " created INTEGER, rotated INTEGER DEFAULT 0)"
    )
    rows = [
        (f"{logs}/app.log", 0, ino, 1_700_000_000, 0),  # older row of the same inode
        (f"{logs}/app.log", rot_offset, rot_ino, 1_700_000_000, 1),  # rotated since
        (f"{logs}/app.log", offset, ino, 1_700_000_100, 0),
    ]
    db.executemany("INSERT INTO in_tail_files (name, offset, inode, created, rotated) VALUES (?, ?, ?, ?, ?)", rows)
    db.commit()
    db.close()


@pytest.mark.parametrize("peer", ["fluentd", "fluent-bit"])
def test_a_host_switches_without_a_gap_or_a_duplicate(tmp_path, peer):
    logs = tmp_path / "logs"
    state = host_as_the_peer_left_it(logs)
    if peer == "fluentd":
        source = tmp_path / "td-agent.pos"
        fluentd_pos_file(source, logs, state)
        option = {"import_pos_file": str(source)}
    else:
        source = tmp_path / "flb.db"
        fluentbit_db(source, logs, state)
        option = {"import_fluentbit_db": str(source)}
    agent = Agent(tmp_path, tail_input(str(logs / "*.log*"), **option) + file_output())
    with agent:
        agent.wait_for_records("seq", set(range(4, 10)) | set(range(106, 110)))
        agent.wait_for_log(r"app\.log\.1 starts at offset \d+, from")
        with open(logs / "other.log", "ab") as f:  # not imported: followed from its end, as any file
            f.write(line(210))
        agent.wait_for_records("seq", {210})
        assert agent.stop() == 0
    # A second start has the agent's own positions: the import is never applied again.
    with open(logs / "app.log", "ab") as f:
        f.write(line(10))
    with agent:
        agent.wait_for_records("seq", {10})
        assert agent.stop() == 0
    assert "positions imported" not in agent.log()
    exactly_once(seqs(agent.output_lines()), set(range(4, 11)) | set(range(106, 110)) | {210})


def test_an_imported_offset_past_the_end_of_the_file_reads_it_from_the_start(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    write_lines(logs / "app.log", range(3))
    ino = os.stat(logs / "app.log").st_ino
    (tmp_path / "td-agent.pos").write_text(f"{logs}/app.log\t{10**6:016x}\t{ino:016x}\n")
    with Agent(
        tmp_path, tail_input(str(logs / "*.log"), import_pos_file=str(tmp_path / "td-agent.pos")) + file_output()
    ) as agent:
        agent.wait_for_records("seq", {0, 1, 2})
        agent.wait_for_log("past its end or not where a line starts; reading it from 0")
        assert agent.stop() == 0


def test_an_unreadable_import_stops_the_first_start_with_one_line(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (tmp_path / "td-agent.pos").write_text("not a pos line\n")
    agent = Agent(
        tmp_path, tail_input(str(logs / "*.log"), import_pos_file=str(tmp_path / "td-agent.pos")) + file_output()
    )
    with pytest.raises(RuntimeError, match="exited with 1"):
        agent.start()
    assert "line 1 is not 'path<TAB>offset<TAB>inode'" in agent.log()


@pytest.mark.parametrize("kind", ["fifo", "device", "view", "too many"])
def test_an_import_that_would_never_end_is_refused_at_start_with_one_line(tmp_path, kind, monkeypatch):
    """A FIFO (the read would block for ever), /dev/zero (it would fill the memory), a Fluent Bit
    DB whose in_tail_files is a VIEW over an endless recursive CTE, a table past the bound."""
    from agent.inputs.tail import imported

    logs = tmp_path / "logs"
    logs.mkdir()
    option, path = "import_pos_file", tmp_path / "td-agent.pos"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path = "/dev/zero"
    else:
        option, path = "import_fluentbit_db", tmp_path / "flb.db"
        db = sqlite3.connect(path)
        if kind == "view":
            db.execute(
                "CREATE VIEW in_tail_files AS WITH RECURSIVE n(id) AS (SELECT 1 UNION ALL SELECT id + 1 FROM n)"
                " SELECT id, 'x' AS name, 0 AS offset, id AS inode FROM n"
            )
        else:
            db.execute("CREATE TABLE in_tail_files (id INTEGER PRIMARY KEY, name TEXT, offset INTEGER, inode INTEGER)")
            db.executemany(
                "INSERT INTO in_tail_files (name, offset, inode) VALUES ('x', 0, ?)", [(i,) for i in range(50)]
            )
            monkeypatch.setattr(imported, "MAX_POSITIONS", 10)
        db.commit()
        db.close()
    if kind == "too many":  # the bound itself, read in this process
        with pytest.raises(ConfigError, match="more than 10 files"):
            imported.read_fluentbit_db(path)
        return
    agent = Agent(tmp_path, tail_input(str(logs / "*.log"), **{option: str(path)}) + file_output())
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="exited with 1"):
        agent.start(timeout=20)
    assert time.monotonic() - started < 15
    reason = {"fifo": "not a regular file", "device": "not a regular file", "view": "is not a table"}[kind]
    assert f"{option} {path}: " in agent.log() and reason in agent.log()


def test_a_slow_import_query_ends_at_its_deadline(tmp_path, monkeypatch):
    from agent.inputs.tail import imported

    path = tmp_path / "flb.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE in_tail_files (id INTEGER PRIMARY KEY, name TEXT, offset INTEGER, inode INTEGER)")
    db.executemany("INSERT INTO in_tail_files (name, offset, inode) VALUES ('x', 0, ?)", [(i,) for i in range(50_000)])
    db.commit()
    db.close()
    assert len(imported.read_fluentbit_db(path)) == 50_000
    monkeypatch.setattr(imported, "MAX_QUERY_SECONDS", 0.0)
    with pytest.raises(ConfigError, match="not read within"):
        imported.read_fluentbit_db(path)
