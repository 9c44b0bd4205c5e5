"""The config the agent runs on when none is named, shipped inside the package.

``agent.toml`` here is a template: ``$data_dir`` becomes where the agent keeps
its data. conf/agent.toml in the repository is the same file with
``data_dir = "var"`` (a test keeps the two equal).
"""

from __future__ import annotations

import os
import string
from importlib import resources
from pathlib import Path

SYSTEM_CONFIG = Path("/etc/hive-agent/agent.toml")


def template() -> str:
    return resources.files(__package__).joinpath("agent.toml").read_text("utf-8")


def render(data_dir: str | Path) -> str:
    return string.Template(template()).substitute(data_dir=str(data_dir))


def user_state_dir() -> Path:
    """Where a user's agent keeps its data: $XDG_STATE_HOME/hive-agent, or ~/.local/state/hive-agent."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "hive-agent"


def default_config() -> Path:
    """The config to use when none is named: /etc/hive-agent/agent.toml when it exists, else the
    embedded default, written (0600) into the user's state directory, whose data_dir it is."""
    if SYSTEM_CONFIG.exists():
        return SYSTEM_CONFIG
    state = user_state_dir()
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = state / "agent.toml"
    text = render(state)
    if not path.exists() or path.read_text("utf-8") != text:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
    return path
