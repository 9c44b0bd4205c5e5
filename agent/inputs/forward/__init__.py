"""``type = "forward"``: Fluentd's in_forward. The package's rooms: config (the options),
server (the listening sockets and the bounds across connections), connection (the asyncio
adapter around the protocol's session, agent/protocol/forward/session.py), flow (why a
connection reads nothing now) and throttle (failed authentications)."""

from __future__ import annotations

from pathlib import Path

from agent.ingest import Ingest
from agent.inputs.forward.config import ForwardInputConfig, User
from agent.inputs.forward.connection import RESOLVE_TIMEOUT, ForwardConnection
from agent.inputs.forward.server import ForwardInput, ForwardStats
from agent.inputs.forward.throttle import AUTH_PENALTY, MAX_AUTH_PENALTY, AuthThrottle

__all__ = [
    "AUTH_PENALTY",
    "MAX_AUTH_PENALTY",
    "RESOLVE_TIMEOUT",
    "AuthThrottle",
    "ForwardConnection",
    "ForwardInput",
    "ForwardInputConfig",
    "ForwardStats",
    "User",
    "build",
]


def build(cfg: ForwardInputConfig, ingest: Ingest, data_dir: Path) -> ForwardInput:
    return ForwardInput(cfg, ingest)
