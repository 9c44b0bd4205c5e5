"""A data_dir that is not the agent's alone is refused before anything is acked into it (issue 17, item 1)."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agent import datadir
from tests.agentproc import Agent, file_output, forward_input

ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")


def hive_agent(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args, "-c", str(workdir / "agent.toml")],
        capture_output=True,
        text=True,
        cwd=workdir,
        timeout=60,
    )


def configured(tmp_path: Path) -> Agent:
    return Agent(tmp_path, forward_input() + file_output())


@needs_root
def test_a_data_dir_another_user_owns_and_may_write_is_refused_and_nothing_is_written_through_its_symlink(tmp_path):
    configured(tmp_path)
    var = tmp_path / "var"
    (var / "journal").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (var / "deadletter").symlink_to(elsewhere)
    for path in (var, var / "journal"):
        os.chown(path, NOBODY, NOBODY)
        os.chmod(path, 0o777)
    run = hive_agent(tmp_path, "run")
    assert run.returncode == 1
    [line] = run.stderr.strip().splitlines()
    assert str(var) in line and f"uid {NOBODY}" in line
    # Nothing of it was changed or used: the owner's mode stands, no lock, nothing through the link.
    assert stat.S_IMODE(var.stat().st_mode) == 0o777
    assert not (var / "agent.lock").exists() and list(elsewhere.iterdir()) == []
    check = hive_agent(tmp_path, "check")
    assert check.returncode == 1 and str(var) in check.stderr


@needs_root
def test_a_journal_directory_another_user_owns_inside_the_agents_data_dir_is_refused(tmp_path):
    configured(tmp_path)
    journal = tmp_path / "var" / "journal"
    journal.mkdir(parents=True)
    os.chown(journal, NOBODY, NOBODY)
    run = hive_agent(tmp_path, "run")
    assert run.returncode == 1 and str(journal) in run.stderr and f"uid {NOBODY}" in run.stderr


def test_a_symlink_inside_data_dir_is_refused_even_when_the_agent_planted_nothing_else(tmp_path):
    configured(tmp_path)
    var = tmp_path / "var"
    var.mkdir()
    target = tmp_path / "dead-letters-elsewhere"
    target.mkdir()
    (var / "deadletter").symlink_to(target)
    run = hive_agent(tmp_path, "run")
    assert run.returncode == 1 and f"{var / 'deadletter'} is a symlink" in run.stderr
    assert list(target.iterdir()) == []
    assert hive_agent(tmp_path, "check").returncode == 1
    # deadletter replay writes into data_dir too: refused the same way
    replay = subprocess.run(
        [sys.executable, "-m", "agent", "deadletter", "list", "-c", str(tmp_path / "agent.toml")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert replay.returncode == 1 and "is a symlink" in replay.stderr


def test_the_agents_own_open_directories_are_closed_and_the_agent_runs(tmp_path):
    agent = configured(tmp_path)
    var = tmp_path / "var"
    (var / "journal").mkdir(parents=True)
    os.chmod(var, 0o777)
    os.chmod(var / "journal", 0o775)
    assert hive_agent(tmp_path, "check").returncode == 1  # check changes nothing: it says what start would
    with agent:
        assert stat.S_IMODE(var.stat().st_mode) == 0o700
        assert stat.S_IMODE((var / "journal").stat().st_mode) == 0o700
    assert hive_agent(tmp_path, "check").returncode == 0


def test_a_fifo_in_data_dir_is_refused(tmp_path):
    var = tmp_path / "var"
    (var / "cursors").mkdir(parents=True)
    os.mkfifo(var / "cursors" / "hive.json")
    with pytest.raises(datadir.Untrusted, match="not a directory, a regular file or a socket"):
        datadir.prepare(var)


def test_a_parent_others_may_write_without_the_sticky_bit_is_refused_with_it_accepted(tmp_path):
    parent = tmp_path / "shared"
    parent.mkdir()
    os.chmod(parent, 0o777)
    with pytest.raises(datadir.Untrusted, match="parent"):
        datadir.prepare(parent / "var")
    assert datadir.problems(parent / "var") and datadir.problems(parent / "missing" / "var")
    os.chmod(parent, 0o1777)  # as /tmp: others keep to their own names
    assert datadir.prepare(parent / "var") == (parent / "var").resolve()
    assert datadir.problems(parent / "var") == []


def test_a_data_dir_that_is_itself_a_symlink_is_followed_to_a_checked_target(tmp_path):
    volume = tmp_path / "volume"
    volume.mkdir(mode=0o700)
    (tmp_path / "var").symlink_to(volume)
    assert datadir.prepare(tmp_path / "var") == volume.resolve()


def test_a_planted_tree_too_large_to_be_the_agents_is_refused_without_walking_it_all(tmp_path, monkeypatch):
    var = tmp_path / "var"
    var.mkdir()
    for i in range(50):
        (var / f"f{i}").write_bytes(b"")
    monkeypatch.setattr(datadir, "MAX_ENTRIES", 10)
    with pytest.raises(datadir.Untrusted, match="more than 10 entries"):
        datadir.prepare(var)
