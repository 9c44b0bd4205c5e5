"""The delivery process: every output's delivery loop, reading the journal.

Why a process of its own: decoding journal batches and encoding them for an
output costs more CPU than ingest does, and both under one GIL share a single
core. The journal is already the boundary between inputs and outputs, so the
outputs run here, on the other core, and read the segment files the main
process writes. Only the main process writes segments and deletes them; only
this process writes cursors.

Stopping: on SIGTERM the process drains (delivers up to the journal's end,
which the main process has closed by then), commits cursors and exits 0. A
second SIGTERM, or ``shutdown_timeout``, stops at once; undelivered records
stay in the journal for the next start. SIGINT is ignored: the main process
owns Ctrl-C and stops this one in order.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
from collections.abc import Callable

from agent import tasks
from agent.component import Output
from agent.config.document import AgentConfig
from agent.deadletter import DeadLetterStore
from agent.delivery import snapshot
from agent.delivery.runner import OutputRunner
from agent.fsutil import atomic_write
from agent.journal.cursor import CursorStore
from agent.log import Summary
from agent.memory import Trimmer
from agent.paths import DataPaths
from agent.registry import OUTPUTS
from agent.render import allow_deep_records

log = logging.getLogger("agent.delivery.process")


SNAPSHOT_INTERVAL = 1.0
_SNAPSHOT_FAILURES = Summary(60.0)


def _write_snapshot(paths: DataPaths, runners: list[OutputRunner], group: int) -> None:
    """The outputs' counters and states, for the main process's /metrics and /health."""
    data = snapshot.DeliverySnapshot(
        pid=os.getpid(),
        at_ns=time.time_ns(),
        outputs={r.name: r.snapshot() for r in runners},
        task_deaths=tasks.deaths(),  # this process's (agent/tasks.py), for /metrics and /health
        dead_critical=tasks.dead_critical(),
    )
    try:
        paths.state.mkdir(parents=True, exist_ok=True)
        atomic_write(paths.delivery_snapshot(group), snapshot.encode(data), durable=False)
    except OSError as exc:  # a full disk: once a minute, not every second
        held = _SNAPSHOT_FAILURES.should_log(exc.errno)
        if held is not None:
            log.warning(
                "cannot write the delivery snapshot: %s%s",
                exc,
                f" ({held} more times since the last line)" if held else "",
            )


async def _report(paths: DataPaths, runners: list[OutputRunner], group: int) -> None:
    while True:
        _write_snapshot(paths, runners, group)
        await asyncio.sleep(SNAPSHOT_INTERVAL)


def run_forked(cfg: AgentConfig, go_fd: int, ready_fd: int, group: int) -> int:
    """The delivery process's main when the main process forked it (agent/delivery/supervisor.py prefork).

    Everything but its two pipes is closed first: the fds of its siblings' pipes (a sibling
    must see end of file when the main process goes) and anything else the main process held.
    """
    from agent.cli import event_loop_runner
    from agent.log import setup_logging

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's; it stops us in order
    try:  # the name ps -o comm and top show: the command line is the main process's
        with open("/proc/self/comm", "w") as comm:
            comm.write("hive-delivery")
    except OSError:
        pass
    low, high = sorted((go_fd, ready_fd))
    os.closerange(3, low)
    os.closerange(low + 1, high)
    os.closerange(high + 1, os.sysconf("SC_OPEN_MAX"))
    try:
        go = os.read(go_fd, 1)  # the main process holds the data_dir lock and has recovered the journal
    except KeyboardInterrupt:
        go = b""
    os.close(go_fd)
    if go != b"G":  # the main process stopped before it started us
        os.close(ready_fd)
        return 0
    setup_logging(cfg.agent.log_level, cfg.agent.log_format, "delivery" if group == 0 else f"delivery-{group}")
    return event_loop_runner()(run_delivery(cfg, ready_fd, group))


def _shrinker(outputs: list[Output]) -> Callable[[], None]:
    def shrink() -> None:
        for out in outputs:
            out.shrink()

    return shrink


async def run_delivery(cfg: AgentConfig, ready_fd: int | None = None, group: int = 0) -> int:
    allow_deep_records()  # every record ingest took renders in every output format
    paths = DataPaths(cfg.agent.data_dir)
    cursors = CursorStore(paths.cursors)
    deadletters = DeadLetterStore(paths.deadletter)
    configs = cfg.delivery_group(group)
    outputs = [OUTPUTS[o.type].build(o, paths.root) for o in configs]
    for out in outputs:
        await out.start()
    runners = [OutputRunner(o_cfg, out, paths.journal, cursors, deadletters) for o_cfg, out in zip(configs, outputs)]
    draining, stopping = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    parent = os.getppid()

    def on_term() -> None:
        if draining.is_set():
            stopping.set()
            return
        log.info("draining: delivering what the journal holds (up to %.0fs)", cfg.agent.shutdown_timeout)
        draining.set()
        loop.call_later(cfg.agent.shutdown_timeout, stopping.set)

    loop.add_signal_handler(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    async def watch_parent() -> None:
        while not draining.is_set():
            await asyncio.sleep(1.0)
            if os.getppid() != parent:
                log.error("the main process is gone; draining")
                on_term()

    owner = f"delivery-{group}"
    watcher = tasks.spawn(watch_parent(), "parent-watch", owner=owner, critical=True)
    reporter = tasks.spawn(_report(paths, runners, group), "delivery-report", owner=owner, critical=True)
    trimmer = tasks.spawn(
        Trimmer(lambda: sum(r.stats.batches for r in runners), _shrinker(outputs)).run(), "memory-trimmer", owner=owner
    )
    if ready_fd is not None:
        os.write(ready_fd, b"R")
        os.close(ready_fd)
    # Batches make many short-lived objects; a young generation this small
    # would run the cyclic collector every few records for nothing.
    gc.freeze()
    gc.set_threshold(50_000, 50, 50)
    results = await asyncio.gather(*(r.run(draining, stopping) for r in runners), return_exceptions=True)
    watcher.cancel()
    reporter.cancel()
    trimmer.cancel()
    _write_snapshot(paths, runners, group)
    code = 0
    for runner, result in zip(runners, results):
        if isinstance(result, BaseException):
            log.error("output %s: delivery loop died: %r", runner.name, result)
            code = 1
    for out in outputs:
        try:
            await out.close()
        except Exception as exc:
            log.error("output %s: close failed: %r", out.name, exc)
    return code
