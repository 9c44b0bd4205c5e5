"""The delivery process, seen from the main process: start it, restart it, stop it in order.

How it starts: forked from the main process before the main process has an event loop
or a thread (:func:`prefork`), after the config and every module either process runs
are loaded and frozen out of the cyclic collector (``gc.freeze()``). The two processes
then share those pages (the interpreter, pydantic, the config, the agent's code) until
one of them writes to a page: the delivery process adds a few MB of its own where, as
a fresh interpreter, it held a whole second copy (about 45 MB). The child waits on a
pipe until the main process holds the data_dir lock and has recovered the journal
("G"), then says "R" once its signal handlers are in place.

A delivery process restarted after a crash is a fresh interpreter
(``python -m agent deliver``): by then the main process has threads, and a fork of a
process with threads may copy a lock that one of them holds.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent import tasks

if TYPE_CHECKING:
    from agent.config.document import AgentConfig

log = logging.getLogger("agent")

READY_TIMEOUT = 60.0


class ForkedProcess:
    """What the supervisor asks of ``asyncio.subprocess.Process``, for a child made by ``os.fork``."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def _reap(self) -> None:
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # reaped already, by another waiter
            return
        if pid:
            self.returncode = os.waitstatus_to_exitcode(status)

    async def wait(self) -> int:
        loop = asyncio.get_running_loop()
        while self.returncode is None:
            fd = os.pidfd_open(self.pid)  # readable once the child has exited
            exited: asyncio.Future[None] = loop.create_future()
            loop.add_reader(fd, _settle, exited)
            try:
                await exited
            finally:
                loop.remove_reader(fd)
                os.close(fd)
            self._reap()
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass(slots=True)
class Preforked:
    """A delivery process forked before the main process started, waiting for "G" on ``go``."""

    process: ForkedProcess
    go: int  # our end of the pipe the child waits on
    ready: int  # our end of the pipe it says "R" on


def prefork(cfg: AgentConfig, groups: int) -> dict[int, Preforked]:
    """Fork every delivery process now. Call it before any event loop or thread exists."""
    from agent.delivery.process import run_forked
    from agent.memory import cap_arenas

    cap_arenas()  # before any thread: the threads of both processes share two arenas
    gc.collect()
    gc.freeze()  # the collector never writes to these objects' headers, so their pages stay shared
    children: dict[int, Preforked] = {}
    for group in range(groups):
        go_r, go_w = os.pipe()
        ready_r, ready_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the delivery process: it never returns from here
            code = 1
            try:
                code = run_forked(cfg, go_r, ready_w, group)
            except BaseException:
                log.exception("delivery process %s failed", group)
            finally:
                logging.shutdown()
                os._exit(code)
        os.close(go_r)
        os.close(ready_w)
        children[group] = Preforked(ForkedProcess(pid), go_w, ready_r)
    return children


class DeliveryProcess:
    """Starts the delivery process (preforked, else ``python -m agent deliver``) and restarts it if it dies."""

    def __init__(self, config_path: Path, group: int = 0, preforked: Preforked | None = None):
        self.config_path = config_path
        self.group = group
        self.preforked = preforked
        self.proc: asyncio.subprocess.Process | ForkedProcess | None = None
        self._supervisor: asyncio.Task | None = None
        self._stopping = False
        self.restarts = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        if self.preforked is not None:
            child, self.preforked = self.preforked, None
            self.proc = child.process
            os.write(child.go, b"G")
            os.close(child.go)
            await self._await_ready(child.ready)
        else:
            await self._spawn()
        # Without it a crashed delivery process is not started again.
        self._supervisor = tasks.spawn(
            self._supervise(), f"delivery-supervisor-{self.group}", owner=f"delivery-{self.group}", critical=True
        )

    async def _spawn(self) -> None:
        # The child says "ready" on a pipe once its signal handlers are in place,
        # so that a SIGTERM from us always means "drain", never "die mid-import".
        ready_r, ready_w = os.pipe()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "agent",
                "deliver",
                "-c",
                str(self.config_path),
                "--ready-fd",
                str(ready_w),
                "--group",
                str(self.group),
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=(ready_w,),
            )
        finally:
            os.close(ready_w)
        await self._await_ready(ready_r)

    async def _await_ready(self, ready_r: int) -> None:
        loop = asyncio.get_running_loop()
        answer = loop.create_future()

        def readable() -> None:
            try:
                data = os.read(ready_r, 1)  # b"" when the child died before saying anything
            except BlockingIOError:
                return
            if not answer.done():
                answer.set_result(data)

        os.set_blocking(ready_r, False)
        loop.add_reader(ready_r, readable)
        try:
            said = await asyncio.wait_for(answer, READY_TIMEOUT)
        except TimeoutError:
            said = b""
        finally:
            loop.remove_reader(ready_r)
            os.close(ready_r)
        if said != b"R":
            log.error(
                "delivery process did not report ready (exit code %s)", self.proc.returncode if self.proc else None
            )

    async def _supervise(self) -> None:
        backoff = 0.5
        while not self._stopping and self.proc is not None:
            code = await self.proc.wait()
            if self._stopping:
                return
            log.error("delivery process exited with code %s; restarting in %.1fs", code, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
            if not self._stopping:
                self.restarts += 1
                await self._spawn()

    async def stop(self, timeout: float) -> int | None:
        self._stopping = True
        if self.proc is None or self.proc.returncode is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            log.error(
                "delivery process did not stop within %.0fs; killing it (undelivered records stay in the journal)",
                timeout,
            )
            self.proc.kill()
            return await self.proc.wait()

    def kill(self) -> None:
        self._stopping = True
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
