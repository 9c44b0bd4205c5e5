"""Background tasks that never die silently.

The event loop holds tasks only weakly, and a task that raises with no one awaiting it is logged
(if at all) when it is garbage collected: the journal's segment collector could die and the
journal fill without a word. Every background task of the agent is started by :func:`spawn`,
which keeps it, logs its death once with the traceback, counts it for its owner (shown as
``hive_agent_component_errors_total{reason="task"}``), and, for a task the process cannot run
without (``critical``), keeps the reason for ``/health`` (agent/health.py).

One registry per process: the main process and each delivery process have their own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("agent")

_running: set[asyncio.Task] = set()
_deaths: dict[str, int] = {}  # owner -> tasks of it that died
_dead_critical: dict[str, str] = {}  # task name -> why it ended


def spawn(coro: Coroutine[Any, Any, Any], name: str, *, owner: str, critical: bool = False) -> asyncio.Task:
    """Start ``coro`` as a task named ``name`` of component ``owner``.

    ``critical``: the process cannot do its work without it, so that its death makes the agent
    unhealthy. Cancelling a task is its owner's way to stop it, and is no death."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    _running.add(task)
    task.add_done_callback(lambda t: _done(t, owner, critical))
    return task


def _done(task: asyncio.Task, owner: str, critical: bool) -> None:
    _running.discard(task)
    if task.cancelled():
        return
    exc = task.exception()
    if exc is None:
        return  # finished its work (a loop that ends at its owner's stop)
    why = f"{type(exc).__name__}: {exc}"
    _deaths[owner] = _deaths.get(owner, 0) + 1
    if critical:
        _dead_critical[task.get_name()] = why
    log.error(
        "%s: task %s died: %s%s",
        owner,
        task.get_name(),
        why,
        "; the agent cannot do its work without it (see /health)" if critical else "",
        exc_info=exc,
    )


def deaths() -> dict[str, int]:
    """Tasks that died, by owner."""
    return dict(_deaths)


def dead_critical() -> dict[str, str]:
    """Critical tasks that ended, by name, with why."""
    return dict(_dead_critical)


def running() -> set[asyncio.Task]:
    return set(_running)
