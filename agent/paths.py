"""Where things live under ``data_dir``: one place that names them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataPaths:
    root: Path

    def __init__(self, root):
        object.__setattr__(self, "root", Path(root))

    @property
    def journal(self) -> Path:
        return self.root / "journal"

    @property
    def quarantine(self) -> Path:
        """Damaged journal bytes that recovery set aside (never deleted by the agent)."""
        return self.root / "quarantine"

    @property
    def cursors(self) -> Path:
        return self.root / "cursors"

    @property
    def deadletter(self) -> Path:
        return self.root / "deadletter"

    @property
    def lock(self) -> Path:
        return self.root / "agent.lock"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def delivery_snapshot(self, group: int = 0) -> Path:
        """Where delivery process ``group`` reports its outputs (``delivery.json`` for the first)."""
        return self.state / ("delivery.json" if group == 0 else f"delivery-{group}.json")
