"""Where things live under ``data_dir``: one place that names them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_NOT_IN_FILE_NAMES = re.compile(r"[^A-Za-z0-9_.-]")


def file_name(component: str) -> str:
    """A component's name as the stem of its files (cursor, dead letters, positions, state).

    Config validation already restricts names to these characters, so a valid name is its own
    file name; the replacement only guards names that come from elsewhere (a spool file)."""
    return _NOT_IN_FILE_NAMES.sub("_", component)


@dataclass(frozen=True)
class DataPaths:
    root: Path

    def __init__(self, root: str | Path) -> None:
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

    @property
    def ledger(self) -> Path:
        """Every purchase by day, game and output (agent/ledger/store.py)."""
        return self.state / "ledger.sqlite"

    @property
    def monitor_address(self) -> Path:
        """``host:port`` the running agent's monitor listens on (the port the system chose for 0)."""
        return self.state / "monitor"

    @property
    def control_socket(self) -> Path:
        """The monitor's routes for the agent's own user: the tap reads live purchases (0600)."""
        return self.state / "control.sock"

    def delivery_snapshot(self, group: int = 0) -> Path:
        """Where delivery process ``group`` reports its outputs (``delivery.json`` for the first)."""
        return self.state / ("delivery.json" if group == 0 else f"delivery-{group}.json")
