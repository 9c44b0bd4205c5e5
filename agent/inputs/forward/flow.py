"""Why a Forward connection reads nothing now: each reason paused and resumed by its own owner.

As uvicorn's ``FlowControl``, with the reasons kept: the socket reads again once no reason
holds it, and the deadline sweep can tell a connection held back by the agent from a peer
that stalls.
"""

from __future__ import annotations

import asyncio
import enum


class Held(enum.Enum):
    IN_FLIGHT = "frames wait for the journal (max_inflight_frames)"
    JOURNAL_FULL = "the journal is full"
    ACKS_UNREAD = "the peer has not read its acks"
    RESOLVING = "its host name is being looked up (source_hostname_key)"
    PARSING = "a costly frame is being parsed"
    CLOSING = "the connection is closing"


class FlowControl:
    def __init__(self, transport: asyncio.Transport):
        self.transport = transport
        self.held: set[Held] = set()

    def pause(self, reason: Held) -> None:
        if not self.held:
            try:
                self.transport.pause_reading()
            except RuntimeError:  # closing already
                pass
        self.held.add(reason)

    def resume(self, reason: Held) -> None:
        if reason not in self.held:
            return
        self.held.discard(reason)
        if not self.held and not self.transport.is_closing():
            self.transport.resume_reading()

    def set(self, reason: Held, on: bool) -> None:
        if on:
            self.pause(reason)
        else:
            self.resume(reason)

    @property
    def paused(self) -> bool:
        return bool(self.held)

    @property
    def by_us(self) -> bool:
        """Held back by the agent (backpressure), not waiting on the peer: no deadline runs."""
        return bool(self.held - {Held.ACKS_UNREAD})
