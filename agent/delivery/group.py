"""The outputs one delivery process runs, each in its own loop, and how a reload changes them.

A reload comes in two steps, so that no output ever runs in two processes at once (an
output can move to another delivery process when the outputs before it change:
output i runs in process i mod ``delivery_processes``): :meth:`prepare` stops every
output this process runs whose config changed, that is gone, or that moves elsewhere —
each finishes the send in flight or, stopped while it waits to retry, leaves its cursor
before the records it held (a duplicate at worst, never a loss) — and only when every
delivery process has done that does :meth:`apply` start the ones that are new here.
An output whose config did not change keeps running untouched, its connections too.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
from dataclasses import dataclass

from agent.component import Output
from agent.config.document import AgentConfig
from agent.config.types import OutputConfigBase
from agent.deadletter import DeadLetterStore
from agent.delivery.runner import OutputRunner
from agent.journal.cursor import CursorStore, Position
from agent.ledger.output import OutputLedger
from agent.ledger.plan import LedgerPlan
from agent.ledger.store import Ledger, LedgerWriter
from agent.paths import DataPaths
from agent.registry import OUTPUTS

log = logging.getLogger("agent.delivery")


@dataclass(slots=True)
class Running:
    cfg: OutputConfigBase
    output: Output
    runner: OutputRunner
    drain: asyncio.Event  # deliver up to the journal's end, then end
    stop: asyncio.Event  # end now (the send in flight finishes)
    task: asyncio.Task[None]


class DeliveryGroup:
    def __init__(self, cfg: AgentConfig, group: int, paths: DataPaths):
        self.cfg = cfg
        self.group = group
        self.paths = paths
        self.cursors = CursorStore(paths.cursors)
        self.deadletters = DeadLetterStore(paths.deadletter)
        self.running: dict[str, Running] = {}
        self.draining = asyncio.Event()  # deliver up to the journal's end, then stop
        self.stopping = asyncio.Event()  # stop now
        self.failed: list[str] = []  # outputs whose loop died
        self._added: list[OutputConfigBase] = []  # prepared, not yet applied
        self._new: set[str] = set()  # of those, the ones the agent did not run before
        self._end: Position | None = None
        self.ledger: LedgerWriter | None = None
        if cfg.agent.ledger:
            self.ledger = LedgerWriter(Ledger(paths.ledger, LedgerPlan(cfg), paths.journal))

    @property
    def runners(self) -> list[OutputRunner]:
        return [r.runner for r in self.running.values()]

    @property
    def outputs(self) -> list[Output]:
        return [r.output for r in self.running.values()]

    async def start(self) -> None:
        """The outputs of the config the process started with."""
        for o_cfg in self.cfg.delivery_group(self.group):
            await self._add(o_cfg)

    async def _add(self, o_cfg: OutputConfigBase) -> None:
        output = OUTPUTS[o_cfg.type].build(o_cfg, self.paths.root)
        await output.start()
        ledger = None
        if self.ledger is not None:
            ledger = OutputLedger(o_cfg.name, self.ledger, self.ledger.ledger.plan, output)
        runner = OutputRunner(o_cfg, output, self.paths.journal, self.cursors, self.deadletters, ledger=ledger)
        drain, stop = asyncio.Event(), asyncio.Event()
        if self.draining.is_set():
            drain.set()
        if self.stopping.is_set():
            stop.set()
        task = asyncio.get_running_loop().create_task(runner.run(drain, stop), name=f"output-{o_cfg.name}")
        task.add_done_callback(functools.partial(self._ended, o_cfg.name))
        self.running[o_cfg.name] = Running(o_cfg, output, runner, drain, stop, task)

    def _ended(self, name: str, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("output %s: delivery loop died: %r", name, task.exception())
            self.failed.append(name)

    async def _remove(self, name: str, drain: bool) -> None:
        """Stop one output; ``drain``: first deliver what the journal holds for it, for up to
        ``shutdown_timeout`` (a removed output, as at shutdown; a changed one resumes from its cursor)."""
        running = self.running.pop(name)
        if drain:
            running.drain.set()
            await asyncio.wait([running.task], timeout=self.cfg.agent.shutdown_timeout)
        running.stop.set()
        await asyncio.wait([running.task])
        await self._close(running)

    async def _close(self, running: Running) -> None:
        try:
            await running.output.close()
        except Exception as exc:
            log.error("output %s: close failed: %r", running.cfg.name, exc)

    async def prepare(self, cfg: AgentConfig, end: Position) -> None:
        """Stop what the new config changes or takes away from this process; remember what it adds."""
        wanted = {o.name: o for o in cfg.delivery_group(self.group)}
        kept_anywhere = {o.name for o in cfg.outputs}
        gone = [name for name, r in self.running.items() if wanted.get(name) != r.cfg]
        for name in gone:
            log.info(
                "output %s: %s for the reload", name, "stopped" if name in kept_anywhere else "drained and removed"
            )
        await asyncio.gather(*(self._remove(name, drain=name not in kept_anywhere) for name in gone))
        self._added = [o for name, o in wanted.items() if name not in self.running]
        # New to the agent, not merely changed or moved here: those keep reading from their
        # cursor, or from the oldest event when they have not saved one yet.
        before = {o.name for o in self.cfg.outputs}
        self._new = {o.name for o in self._added if o.name not in before}
        self._end = end
        self.cfg = cfg
        if self.ledger is not None:
            self.ledger.ledger.plan = LedgerPlan(cfg)  # for the outputs started from now on, and the in count

    async def apply(self) -> list[str]:
        """Start what :meth:`prepare` found new; the errors of those that could not start."""
        errors = []
        for o_cfg in self._added:
            starts_at_end = o_cfg.name in self._new and o_cfg.reload_start_at == "end"
            if starts_at_end and self._end is not None and self.cursors.load(o_cfg.name) is None:
                # What came before the reload went to the outputs configured then.
                self.cursors.save(o_cfg.name, self._end)
            try:
                await self._add(o_cfg)
            except Exception as exc:
                log.error("output %s: cannot start after the reload: %s", o_cfg.name, exc)
                errors.append(f"output {o_cfg.name}: cannot start: {exc}")
            else:
                log.info("output %s: started by the reload", o_cfg.name)
        self._added = []
        return errors

    def drain_all(self) -> None:
        self.draining.set()
        for running in self.running.values():
            running.drain.set()

    def stop_all(self) -> None:
        self.stopping.set()
        for running in self.running.values():
            running.stop.set()

    async def wait_done(self) -> int:
        """Until every output's loop has ended (after ``draining`` or ``stopping``); 1 if one died."""
        while self.running:
            await asyncio.wait([r.task for r in self.running.values()])
            if all(r.task.done() for r in self.running.values()):
                break
        for running in self.running.values():
            await self._close(running)
        return 1 if self.failed else 0

    def close(self) -> None:
        """After the loops and the ledger's in count have ended."""
        if self.ledger is not None:
            self.ledger.close()

    async def count_in(self, interval: float = 1.0) -> None:
        """Keep the ledger's ``in`` counts up with the journal (run by the first delivery process only)."""
        ledger = self.ledger
        if ledger is None:
            return
        while not self.stopping.is_set():
            try:
                await ledger.call(ledger.ledger.advance_in)
            except (OSError, sqlite3.Error) as exc:  # a full disk: the next try counts what this one did not
                log.warning("ledger: cannot count what came in: %s", exc)
            try:
                await asyncio.wait_for(self.stopping.wait(), interval)
            except TimeoutError:
                pass
