"""What a delivery process tells the main process's monitor, every second: one struct, written by
the delivery process (``state/delivery.json``, ``state/delivery-<n>.json``) and read by the
monitor, so that each field is named once and checked, not looked up by string."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import msgspec


@dataclass(slots=True)
class RunnerStats:
    """A delivery loop's counters, carried by its snapshot."""

    sent_records: int = 0
    retries: int = 0
    dead_lettered: int = 0
    batches: int = 0
    pauses: int = 0
    local_io_errors: int = 0  # its own cursor or dead-letter writes that failed (a full disk)
    refunds_skipped: int = 0  # refunds an output that renders the Hive spec has no form for


class OutputSnapshot(msgspec.Struct, kw_only=True):
    """One output's counters and state (agent/delivery/runner.py, OutputRunner.snapshot)."""

    type: str = ""
    match: str = ""
    sent_records: int = 0
    retries: int = 0
    dead_lettered: int = 0
    batches: int = 0
    pauses: int = 0
    local_io_errors: int = 0
    refunds_skipped: int = 0
    output_stats: dict[str, int] = {}  # the output's own counters (the vendor mirrors')
    retrying: bool = False
    retry_steps: int = 0
    paused: bool = False
    last_error: str = ""  # why it retries or is paused, while it does; scrubbed
    caught_up: bool = True
    oldest_pending_ns: int | None = None  # when the oldest event not yet delivered was journaled
    last_success_ns: int | None = None  # when the destination last took a send
    position: tuple[int, int] | None = None  # (segment, offset): everything before is delivered


class DeliverySnapshot(msgspec.Struct, kw_only=True):
    pid: int = 0
    at_ns: int = 0  # when it was written (of several processes' merged: the oldest)
    outputs: dict[str, OutputSnapshot] = {}
    task_deaths: dict[str, int] = {}  # agent/tasks.py, by owner
    dead_critical: dict[str, str] = {}  # agent/tasks.py, by task


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(DeliverySnapshot)


def encode(snapshot: DeliverySnapshot) -> bytes:
    return _encoder.encode(snapshot)


def decode(data: bytes) -> DeliverySnapshot:
    """ValueError for bytes that are no snapshot (a torn or foreign file)."""
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ValueError(str(exc)) from None


def merge(snapshots: Iterable[DeliverySnapshot]) -> DeliverySnapshot | None:
    """Several delivery processes' snapshots as one: every output, deaths summed, the oldest time."""
    merged: DeliverySnapshot | None = None
    for snap in snapshots:
        if merged is None:
            merged = DeliverySnapshot(at_ns=snap.at_ns)
        merged.outputs.update(snap.outputs)
        for owner, n in snap.task_deaths.items():
            merged.task_deaths[owner] = merged.task_deaths.get(owner, 0) + n
        merged.dead_critical.update(snap.dead_critical)
        merged.at_ns = min(merged.at_ns, snap.at_ns)
    return merged
