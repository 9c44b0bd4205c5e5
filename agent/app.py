"""The single lifecycle owner: build, start, stop. The only place that wires.

Start order: lock the data directory → recover the journal (cut torn tails)
→ start the delivery process → start inputs → log "ready".

Stop order (SIGTERM or SIGINT): stop accepting; let every connection finish
the frames it already received (journal, ack) → close the journal (write,
fsync) → tell the delivery process to drain up to the journal's end → exit 0.
Everything runs under ``shutdown_timeout``; a second signal exits at once.
Nothing acknowledged can be lost by either: it is in the journal, and the
next start delivers what the outputs had not.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import gc
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent import datadir, tasks
from agent.component import Input
from agent.config.document import AgentConfig, read_config_text
from agent.deadletter import DeadLetterStore
from agent.delivery.supervisor import DeliveryProcess, Preforked
from agent.errors import ConfigError
from agent.fsutil import atomic_write
from agent.ingest import Ingest
from agent.journal.cursor import CursorStore, Position
from agent.journal.journal import Journal
from agent.ledger.book import LedgerBook
from agent.log import Summary
from agent.memory import Trimmer
from agent.monitor.server import Monitor
from agent.paths import DataPaths
from agent.registry import FILTERS, INPUTS
from agent.reload import Reloader, ReloadResult
from agent.replay import ReplayIngest

log = logging.getLogger("agent")

COLLECT_INTERVAL = 0.5


def _exception_handler(summary: Summary) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """The loop's own errors, with one that can repeat many times a second summarized: out of
    descriptors, the loop stops accepting for a moment (asyncio does) and says so once a minute."""

    def handle(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
            held = summary.should_log("emfile")
            if held is not None:
                log.error(
                    "out of file descriptors (%s): not accepting connections for a moment%s",
                    exc.strerror,
                    f" ({held} more times since the last line)" if held else "",
                )
            return
        loop.default_exception_handler(context)

    return handle


def delivery_groups(cfg: AgentConfig) -> int:
    """How many delivery processes run: ``delivery_processes``, and never more than there are outputs."""
    return min(cfg.agent.delivery_processes, max(1, len(cfg.outputs)))


class App:
    def __init__(
        self,
        cfg: AgentConfig,
        config_path: Path,
        preforked: dict[int, Preforked] | None = None,
        config_text: str | None = None,
    ):
        """``config_text``: what ``cfg`` was loaded from (read from ``config_path`` when not given)."""
        self.cfg = cfg
        self.config_path = Path(config_path)
        self.config_text = read_config_text(config_path) if config_text is None else config_text
        self.paths = DataPaths(cfg.agent.data_dir)
        try:  # before any component opens a file under it (the dedup store does, right below)
            datadir.prepare(self.paths.root)
        except datadir.Untrusted as exc:
            raise SystemExit(f"hive-agent: refusing data_dir: {exc}") from None
        j = cfg.agent.journal
        self.journal = Journal(
            self.paths.journal,
            fsync=j.fsync,
            fsync_interval=j.fsync_interval,
            segment_bytes=j.segment_bytes,
            max_bytes=j.max_bytes,
        )
        self.cursors = CursorStore(self.paths.cursors)
        self.deadletters = DeadLetterStore(self.paths.deadletter)
        filters = [(f.match, FILTERS[f.type].build(f, self.paths.root)) for f in cfg.filters]
        self.ingest = Ingest(self.journal, filters, self.deadletters)
        self.inputs: list[Input] = [INPUTS[i.type].build(i, self.ingest, self.paths.root) for i in cfg.inputs]
        preforked = preforked or {}
        self.deliveries = [
            DeliveryProcess(self.config_path, group, preforked.get(group), self.config_text)
            for group in range(delivery_groups(cfg))
        ]
        self.monitor = (
            Monitor(self, cfg.monitor.bind, cfg.monitor.port, self.paths.control_socket, cfg.monitor.unhealthy_after)
            if cfg.monitor
            else None
        )
        self._stop = asyncio.Event()
        self.ready = asyncio.Event()  # set once every part has started
        self._run_task: asyncio.Task[int] | None = None
        self.exit_code: int | None = None
        self._signals = 0
        self._lock_fd: int | None = None
        self._failed = False  # a part failed to start: the exit code says so
        self.replays = ReplayIngest(
            self.deadletters,
            self.ingest,
            outputs={o.name for o in cfg.outputs},
            filters_names={f.name for f in cfg.filters},
        )
        self.reloader = Reloader(self)
        self.ledger = LedgerBook(cfg, self.paths) if cfg.agent.ledger else None

    def _lock(self) -> None:
        fd = os.open(self.paths.lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SystemExit(
                f"hive-agent: {self.paths.root} is in use by another agent (lock {self.paths.lock})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _on_signal(self, signame: str) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("%s received: stopping (a second signal forces exit)", signame)
            self._stop.set()
        else:
            log.error("%s received again: forced exit; unacknowledged frames are not acked and will be resent", signame)
            for delivery in self.deliveries:
                delivery.kill()
            os._exit(1)

    def _on_hangup(self) -> None:
        if self.ready.is_set() and not self._stop.is_set():
            tasks.spawn(self.reload(), "reload", owner="agent")
        else:
            log.warning("SIGHUP received while %s: no reload", "stopping" if self._stop.is_set() else "starting")

    async def reload(self) -> ReloadResult:
        """Read the config file again and apply it (agent/reload.py): SIGHUP, ``hive-agent reload``."""
        log.info("reload: reading %s", self.config_path)
        return await self.reloader.reload()

    def request_stop(self) -> None:
        """Stop as on SIGTERM: inputs first, the journal, then the delivery processes drain."""
        self._stop.set()

    async def __aenter__(self) -> App:
        """The whole agent in this process's event loop (its delivery processes are processes),
        as a test runs it: ready on entry, stopped and drained on exit."""
        run = self._run_task = asyncio.get_running_loop().create_task(self.run(owns_process=False))
        ready = asyncio.ensure_future(self.ready.wait())
        await asyncio.wait([ready, run], return_when=asyncio.FIRST_COMPLETED)
        if not self.ready.is_set():
            ready.cancel()
            raise RuntimeError(f"the agent did not start (exit code {run.result()})")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.request_stop()
        if self._run_task is not None:
            self.exit_code = await self._run_task

    async def run(self, owns_process: bool = True) -> int:
        """``owns_process``: signals, the loop's exception handler and the collector's tuning are
        this agent's (``hive-agent run``); not so for an agent run inside another program."""
        self._lock()
        try:
            return await self._run(owns_process)
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    async def _run(self, owns_process: bool) -> int:
        loop = asyncio.get_running_loop()
        if owns_process:
            loop.set_exception_handler(_exception_handler(Summary(60.0)))
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig.name)
            loop.add_signal_handler(signal.SIGHUP, self._on_hangup)
        self.journal.recover()
        s = self.journal.stats
        if s.recovered_records or s.cut_bytes:
            log.info("journal: recovered %d batches; cut %d torn bytes", s.recovered_records, s.cut_bytes)
        await self.journal.start()
        if self.ledger is not None:
            self.ledger.begin(self.journal.end_position)  # before any delivery process counts
        for delivery in self.deliveries:
            await delivery.start()
        try:
            await self._start_inputs()
        except (OSError, ConfigError) as exc:
            log.error("cannot listen: %s" if isinstance(exc, OSError) else "cannot start: %s", exc)
            await self._stop_deliveries(self.cfg.agent.shutdown_timeout)
            await self.journal.close()
            return 1
        try:
            await self.replays.ingest()  # what was spooled while the agent was down
        except Exception:  # nothing in a spool stops the start: it is tried again every COLLECT_INTERVAL
            log.exception("replay: ingesting a spool file failed; left in place")
        if self.monitor is not None:
            try:
                await self.monitor.start()
                self.paths.state.mkdir(mode=0o700, parents=True, exist_ok=True)
                atomic_write(self.paths.monitor_address, f"{self.monitor.bind}:{self.monitor.port}".encode())
            except OSError as exc:
                log.error(
                    "monitor: cannot listen on %s:%s: %s; stopping",
                    self.monitor.bind,
                    self.monitor.port,
                    exc.strerror or exc,
                )
                self._failed = True  # exit non-zero, so that Restart=on-failure starts it again
                self._stop.set()
        # Without the collector the journal fills and never empties: /health says so if it dies.
        collector = tasks.spawn(self._collect_loop(), "journal-collector", owner="journal", critical=True)
        trimmer = tasks.spawn(
            Trimmer(lambda: self.journal.stats.appends, self._shrink).run(), "memory-trimmer", owner="agent"
        )
        ledger = self.ledger
        book = tasks.spawn(ledger.run(lambda: self.ingest.filters), "ledger", owner="agent") if ledger else None
        if owns_process:
            # Filters decode batches into many short-lived objects; a young generation
            # this small would run the cyclic collector every few records for nothing.
            gc.freeze()
            gc.set_threshold(50_000, 50, 50)
        listening = ", ".join(f"{i.name} on {' and '.join(i.listening)}" for i in self.inputs)
        if self.monitor is not None:
            listening += f", monitor on http {self.monitor.bind}:{self.monitor.port}"
        log.info("hive-agent ready: %s; data in %s", listening, self.paths.root)
        self.ready.set()
        await self._stop.wait()
        trimmer.cancel()
        if book is not None:
            book.cancel()
        return await self._shutdown(collector)

    async def _shutdown(self, collector: asyncio.Task) -> int:
        async with self.reloader.lock:  # a reload under way finishes first: it changes what stops
            return await self._stop_all(collector)

    async def _start_inputs(self) -> None:
        # In order, and in a frame of its own: _run's would hold the last input started for as long
        # as the agent runs, and a reload that replaces it could not free it.
        for inp in self.inputs:
            await inp.start()

    async def _stop_all(self, collector: asyncio.Task) -> int:
        deadline = time.monotonic() + self.cfg.agent.shutdown_timeout
        for inp in self.inputs:
            await inp.stop(max(0.1, deadline - time.monotonic()))
        await asyncio.to_thread(self.ingest.close)
        await self.journal.close()
        code = await self._stop_deliveries(max(1.0, deadline - time.monotonic()))
        if self.monitor is not None:
            await self.monitor.stop()
        collector.cancel()
        self._collect()
        if self.ledger is not None:
            await self.ledger.flush(self.ingest.filters)  # the duplicates of the last second
            self.ledger.close()
        log.info("hive-agent stopped (delivery process exit code %s)", code)
        return 1 if self._failed else 0

    async def _stop_deliveries(self, timeout: float) -> int | None:
        """Every delivery process drains at once; the worst exit code counts."""
        codes = await asyncio.gather(*(d.stop(timeout) for d in self.deliveries))
        return next((c for c in codes if c), codes[0] if codes else None)

    def _shrink(self) -> None:
        for f in self.ingest.filters:
            f.shrink()
        if self.ledger is not None:
            self.ledger.plan.shrink()
            self.ledger.writer.shrink()

    def _cursor_positions(self) -> list[Position]:
        first = Position(min(self.journal.segments(), default=1), 0)
        return [self.cursors.load(o.name) or first for o in self.cfg.outputs]

    def _pinned_positions(self) -> list[Position]:
        """What inputs still need to read back (the tail input's markers after its last checkpoint)."""
        pins = [i.pinned_position() for i in self.inputs]
        if self.ledger is not None:
            pins.append(self.ledger.pin())  # what the ledger's in count has not read yet
        return [p for p in pins if p is not None]

    def _collect(self) -> None:
        try:
            self.journal.collect(self._cursor_positions() + self._pinned_positions())
        except OSError as exc:
            log.error("journal: collecting segments failed: %s", exc)

    async def _collect_loop(self) -> None:
        while True:
            await asyncio.sleep(COLLECT_INTERVAL)
            self._collect()
            try:
                await self.replays.ingest()
            except Exception:  # a bad spool file must not stop collection
                log.exception("replay: ingesting a spool file failed")
