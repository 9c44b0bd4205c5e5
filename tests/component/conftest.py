"""The component tier: one part of the agent driven in-process, with fake transports or local
servers and a real journal in a temporary directory; no subprocess."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.deadletter import DeadLetterStore
from agent.ingest import Ingest
from agent.journal.journal import Journal


class FakeTransport(asyncio.Transport):
    """What a ForwardConnection writes and asks of its socket, kept for the test to read."""

    def __init__(self, peer=("127.0.0.1", 50000)):
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.reading = True
        self._peer = peer

    def get_extra_info(self, name, default=None):
        return {"peername": self._peer}.get(name, default)

    def write(self, data) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


@pytest.fixture
async def journal(tmp_path: Path):
    j = Journal(tmp_path / "journal", fsync="always")
    j.recover()
    await j.start()
    yield j
    await j.close()


@pytest.fixture
async def ingest(journal: Journal, tmp_path: Path):
    step = Ingest(journal, [], DeadLetterStore(tmp_path / "deadletter"))
    yield step
    step.close()
