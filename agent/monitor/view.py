"""What the monitor reads of the running agent, and nothing more: a typed view of ``App``
(agent/app.py), so that the monitor's reach is written down and checked, and a test can
hand it a small stand-in."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from agent.component import Filter, Input
    from agent.config.document import AgentConfig
    from agent.journal.cursor import Position
    from agent.journal.journal import Journal
    from agent.monitor.tap import Tap
    from agent.reload import ReloadResult, ReloadStats


class IngestView(Protocol):
    @property
    def filters(self) -> list[Filter]: ...

    @property
    def taps(self) -> list[Tap]: ...  # the monitor adds and removes its taps


class CursorsView(Protocol):
    def load(self, output_name: str) -> Position | None: ...


class DeliveryView(Protocol):
    @property
    def group(self) -> int: ...

    @property
    def running(self) -> bool: ...


class PathsView(Protocol):
    def delivery_snapshot(self, group: int) -> Path: ...

    @property
    def ledger(self) -> Path: ...


class ReloaderView(Protocol):
    @property
    def stats(self) -> ReloadStats: ...


class AgentView(Protocol):
    # Read-only, as the monitor uses them (and so that App's own types fit: a list of
    # DeliveryProcess is a Sequence of DeliveryView).
    @property
    def cfg(self) -> AgentConfig: ...

    @property
    def inputs(self) -> Sequence[Input]: ...

    @property
    def ingest(self) -> IngestView: ...

    @property
    def journal(self) -> Journal: ...

    @property
    def cursors(self) -> CursorsView: ...

    @property
    def deliveries(self) -> Sequence[DeliveryView]: ...

    @property
    def paths(self) -> PathsView: ...

    @property
    def reloader(self) -> ReloaderView: ...

    async def reload(self) -> ReloadResult: ...
