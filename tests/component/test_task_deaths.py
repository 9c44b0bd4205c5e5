"""No background task dies silently (agent/tasks.py): each one the agent cannot run without is
killed here, and its death is logged, counted for its owner and said by /health."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import pytest

from agent import tasks
from agent.inputs.forward import ForwardInput, ForwardInputConfig
from agent.inputs.tail import TailInput
from agent.inputs.tail.config import TailInputConfig
from agent.journal.journal import Journal
from agent.monitor.server import Monitor
from agent.outputs.forward import ForwardOutput, ForwardOutputConfig


@pytest.fixture(autouse=True)
def own_registry(monkeypatch):
    """This test's deaths only: the registry is the process's."""
    monkeypatch.setattr(tasks, "_deaths", {})
    monkeypatch.setattr(tasks, "_dead_critical", {})


class Killed(Exception):
    pass


async def killed(*args, **kwargs) -> None:
    raise Killed("killed by the test")


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def health_of(journal) -> tuple[bool, list[str]]:
    app = SimpleNamespace(
        deliveries=[], journal=journal, paths=SimpleNamespace(delivery_snapshot=lambda g: "/nonexistent")
    )
    return Monitor(app, "127.0.0.1", 0).health()


async def test_each_critical_task_that_dies_is_logged_counted_and_said_by_health(
    ingest, journal, tmp_path, monkeypatch, caplog
):
    monkeypatch.setattr(ForwardInput, "_sweep", killed)
    monkeypatch.setattr(TailInput, "_run", killed)
    monkeypatch.setattr(ForwardOutput, "_heartbeats", killed)
    monkeypatch.setattr(Journal, "_interval_sync", killed)
    forward = ForwardInput(
        ForwardInputConfig.validate(dict(type="forward", name="in", port=0, udp_heartbeat=False)), ingest
    )
    tail = TailInput(
        TailInputConfig.validate(dict(type="tail", name="files", tag="t.*", path=[str(tmp_path / "*.log")])),
        ingest,
        tmp_path,
    )
    out = ForwardOutput(
        ForwardOutputConfig.validate({"type": "forward", "name": "hive", "servers": [{"host": "127.0.0.1", "port": 9}]})
    )
    synced = Journal(tmp_path / "j2", fsync="interval")
    synced.recover()
    with caplog.at_level(logging.ERROR, logger="agent"):
        await forward.start()
        await tail.start()
        await out.start()
        await synced.start()
        await settle()
    try:
        dead = tasks.dead_critical()
        assert set(dead) == {"in-deadlines", "tail-reader:files", "hive-heartbeat", "journal-fsync"}, dead
        assert all(why == "Killed: killed by the test" for why in dead.values())
        assert tasks.deaths() == {"in": 1, "files": 1, "hive": 1, "journal": 1}
        ok, problems = health_of(journal)
        assert not ok and "task in-deadlines died: Killed: killed by the test" in problems
        assert sum("task " in p and " died: " in p for p in problems) == 4
        logged = [r for r in caplog.records if "died" in r.getMessage()]
        assert len(logged) == 4 and all(r.exc_info for r in logged)  # once each, with the traceback
    finally:
        await forward.stop(1.0)
        await tail.stop(1.0)
        await out.close()
        await synced.close()


async def test_a_task_cancelled_by_its_owner_or_finishing_its_work_is_no_death(journal):
    async def works() -> None:
        return None

    async def waits() -> None:
        await asyncio.sleep(3600)

    done = tasks.spawn(works(), "finishes", owner="t", critical=True)
    stopped = tasks.spawn(waits(), "stopped", owner="t", critical=True)
    await settle()
    stopped.cancel()
    await settle()
    assert done.done() and stopped.cancelled()
    assert tasks.deaths() == {} and tasks.dead_critical() == {}
    assert health_of(journal) == (True, [])


async def test_a_task_that_is_not_critical_is_counted_but_leaves_health_alone(journal):
    tasks.spawn(killed(), "resolve", owner="in")
    await settle()
    assert tasks.deaths() == {"in": 1} and tasks.dead_critical() == {}
    assert health_of(journal) == (True, [])
