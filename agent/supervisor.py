"""The delivery process, seen from the main process: start it, restart it, stop it in order."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

log = logging.getLogger("agent")

READY_TIMEOUT = 60.0


class DeliveryProcess:
    """Runs ``python -m agent deliver`` and restarts it if it dies."""

    def __init__(self, config_path: Path, group: int = 0):
        self.config_path = config_path
        self.group = group
        self.proc: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task | None = None
        self._stopping = False
        self.restarts = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        await self._spawn()
        self._supervisor = asyncio.get_running_loop().create_task(
            self._supervise(), name=f"delivery-supervisor-{self.group}"
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
            log.error("delivery process did not report ready (exit code %s)", self.proc.returncode)

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
