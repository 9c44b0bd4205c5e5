"""The delivery process, seen from the main process: start it, restart it, stop it in order.

How it starts: forked from the main process before the main process has an event loop
or a thread (:func:`prefork`), after the config and every module either process runs
are loaded and frozen out of the cyclic collector (``gc.freeze()``). The two processes
then share those pages (the interpreter, the config, the agent's code) until
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
from agent.delivery.channel import Channel, ChannelClosed

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

    cap_arenas()  # before any thread: the threads of both processes share one arena
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
    """Starts the delivery process (preforked, else ``python -m agent deliver``), restarts it if it
    dies, and hands it a reloaded config (agent/reload.py) over its channel (agent/delivery/channel.py)."""

    def __init__(self, config_path: Path, group: int = 0, preforked: Preforked | None = None, config_text: str = ""):
        self.config_path = config_path
        self.config_text = config_text  # what a restarted process runs: the config the agent runs now
        self.group = group
        self.preforked = preforked
        self.proc: asyncio.subprocess.Process | ForkedProcess | None = None
        self.channel: Channel | None = None
        self.lock = asyncio.Lock()  # a reload and a restart, one at a time
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
            await self._await_ready(child.ready, child.go)
        else:
            await self._spawn()
        # Without it a crashed delivery process is not started again.
        self._supervisor = tasks.spawn(
            self._supervise(), f"delivery-supervisor-{self.group}", owner=f"delivery-{self.group}", critical=True
        )

    async def _spawn(self) -> None:
        # The child says "ready" on a pipe once its signal handlers are in place,
        # so that a SIGTERM from us always means "drain", never "die mid-import".
        # It reads the config from its stdin: the text the agent runs, not the file as it is now.
        ready_r, ready_w = os.pipe()
        control_r, control_w = os.pipe()
        try:
            self.proc = proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "agent",
                "deliver",
                "-c",
                str(self.config_path),
                "--config-on-stdin",
                "--ready-fd",
                str(ready_w),
                "--control-fd",
                str(control_r),
                "--group",
                str(self.group),
                stdin=asyncio.subprocess.PIPE,
                pass_fds=(ready_w, control_r),
            )
        except BaseException:
            for fd in (ready_r, control_w):
                os.close(fd)
            raise
        finally:
            os.close(ready_w)
            os.close(control_r)
        assert proc.stdin is not None
        try:
            proc.stdin.write(self.config_text.encode())
            await proc.stdin.drain()
        except ConnectionError:
            pass  # it died at once: said below, as a process that did not report ready
        finally:
            proc.stdin.close()
        await self._await_ready(ready_r, control_w)

    async def _await_ready(self, ready_r: int, control_w: int) -> None:
        if self.channel is not None:
            self.channel.close()
        self.channel = channel = await Channel.open(ready_r, control_w)
        try:
            said = await asyncio.wait_for(channel.read_byte(), READY_TIMEOUT)
        except TimeoutError:
            said = b""
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
            async with self.lock:
                if not self._stopping:
                    self.restarts += 1
                    await self._spawn()

    async def ask(self, kind: bytes, body: bytes, timeout: float) -> tuple[bytes, bytes] | None:
        """One step of a reload (agent/delivery/channel.py); None if the process cannot answer in time.
        Hold ``lock`` around the steps."""
        if not self.running or self.channel is None:
            return None
        try:
            self.channel.send(kind, body)
            return await asyncio.wait_for(self.channel.receive(), timeout)
        except (ChannelClosed, TimeoutError):
            return None

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
        finally:
            if self.channel is not None:
                self.channel.close()

    def restart(self) -> None:
        """Kill it and let the supervisor start it again, on ``config_text`` (a reload it did not answer)."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()

    def kill(self) -> None:
        self._stopping = True
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
