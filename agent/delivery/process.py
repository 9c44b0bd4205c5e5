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

import orjson

from agent import secrets, tasks
from agent.config.document import AgentConfig, load_config_text
from agent.delivery import snapshot
from agent.delivery.channel import APPLIED, APPLY, PREPARE, STOPPED, Channel, ChannelClosed
from agent.delivery.group import DeliveryGroup
from agent.fsutil import atomic_write
from agent.journal.cursor import Position
from agent.log import Summary
from agent.memory import Trimmer
from agent.paths import DataPaths
from agent.render import allow_deep_records

log = logging.getLogger("agent.delivery.process")


SNAPSHOT_INTERVAL = 1.0
_SNAPSHOT_FAILURES = Summary(60.0)


def _write_snapshot(paths: DataPaths, outputs: DeliveryGroup, group: int) -> None:
    """The outputs' counters and states, for the main process's /metrics and /health."""
    data = snapshot.DeliverySnapshot(
        pid=os.getpid(),
        at_ns=time.time_ns(),
        outputs={r.name: r.snapshot() for r in outputs.runners},
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


async def _report(paths: DataPaths, outputs: DeliveryGroup, group: int) -> None:
    while True:
        _write_snapshot(paths, outputs, group)
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
    if go != b"G":  # the main process stopped before it started us
        os.close(go_fd)
        os.close(ready_fd)
        return 0
    setup_logging(cfg.agent.log_level, cfg.agent.log_format, "delivery" if group == 0 else f"delivery-{group}")
    # The pipe it waited on stays open: the main process sends reloads on it (agent/delivery/channel.py).
    return event_loop_runner()(run_delivery(cfg, ready_fd, group, control_fd=go_fd))


def _shrinker(group: DeliveryGroup) -> Callable[[], None]:
    def shrink() -> None:
        for out in group.outputs:
            out.shrink()
        if group.ledger is not None:
            group.ledger.ledger.plan.shrink()
            group.ledger.shrink()

    return shrink


async def _serve_reloads(channel: Channel, group: DeliveryGroup) -> None:
    """The main process's reload steps (agent/reload.py), answered one by one until it goes."""
    while True:
        try:
            kind, body = await channel.receive()
        except ChannelClosed:
            return  # the main process is gone: the parent watch drains
        if group.draining.is_set():
            channel.send(STOPPED if kind == PREPARE else APPLIED, orjson.dumps({"errors": ["draining"]}))
        elif kind == PREPARE:
            asked = orjson.loads(body)
            cfg = load_config_text(asked["config"], asked["origin"])  # the main process validated this text
            secrets.install(cfg)
            await group.prepare(cfg, Position(*asked["end"]))
            channel.send(STOPPED)
        elif kind == APPLY:
            channel.send(APPLIED, orjson.dumps({"errors": await group.apply()}))


async def run_delivery(
    cfg: AgentConfig, ready_fd: int | None = None, group_index: int = 0, control_fd: int | None = None
) -> int:
    allow_deep_records()  # every record ingest took renders in every output format
    paths = DataPaths(cfg.agent.data_dir)
    group = DeliveryGroup(cfg, group_index, paths)
    await group.start()
    draining = group.draining
    loop = asyncio.get_running_loop()
    parent = os.getppid()

    def on_term() -> None:
        if draining.is_set():
            group.stop_all()
            return
        log.info("draining: delivering what the journal holds (up to %.0fs)", group.cfg.agent.shutdown_timeout)
        group.drain_all()
        loop.call_later(group.cfg.agent.shutdown_timeout, group.stop_all)

    loop.add_signal_handler(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    async def watch_parent() -> None:
        while not draining.is_set():
            await asyncio.sleep(1.0)
            if os.getppid() != parent:
                log.error("the main process is gone; draining")
                on_term()

    owner = f"delivery-{group_index}"
    watcher = tasks.spawn(watch_parent(), "parent-watch", owner=owner, critical=True)
    reporter = tasks.spawn(_report(paths, group, group_index), "delivery-report", owner=owner, critical=True)
    trimmer = tasks.spawn(
        Trimmer(lambda: sum(r.stats.batches for r in group.runners), _shrinker(group)).run(),
        "memory-trimmer",
        owner=owner,
    )
    channel = None
    if ready_fd is not None:
        os.write(ready_fd, b"R")
        if control_fd is None:
            os.close(ready_fd)
        else:
            channel = await Channel.open(control_fd, ready_fd)
    reloads = tasks.spawn(_serve_reloads(channel, group), "reloads", owner=owner) if channel is not None else None
    counting = tasks.spawn(group.count_in(), "ledger-in", owner=owner) if group_index == 0 else None
    # Batches make many short-lived objects; a young generation this small
    # would run the cyclic collector every few records for nothing.
    gc.freeze()
    gc.set_threshold(50_000, 50, 50)
    await draining.wait()
    code = await group.wait_done()
    for task in (watcher, reporter, trimmer, reloads, counting):
        if task is not None:
            task.cancel()
    group.close()
    _write_snapshot(paths, group, group_index)
    if channel is not None:
        channel.close()
    return code
