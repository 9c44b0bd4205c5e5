"""The forward output's chunks, made from a send's batches: PackedForward messages within the
chunk limits, each with its chunk id and how many batches are delivered whole once it is acked.
Pure: no I/O."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field

import msgpack

from agent.config.types import KeyStyle
from agent.hive.records import may_hold_extras, render
from agent.journal.batch import TagBatch, record_of
from agent.journal.record import batch_count, batch_entries
from agent.protocol import forward as fwd
from agent.protocol.event_time import pack_event_time
from agent.protocol.forward.entries import split_entries

# With acks and a delivery loop that saves its cursor as they come (send_with_progress), the joined
# batches of a chunk stop past this size: a kill repeats the chunks whose acks were on the way, a
# few of these, where a chunk of a whole journal read (up to 1 MiB) was repeated whole.
ACK_PIECE_BYTES = 64 << 10


@dataclass(slots=True)
class Message:
    data: bytes  # a PackedForward message
    chunk: str  # its chunk id, which the ack names
    index: int  # its place among the send's messages
    done: int  # the batches delivered whole once it and every message before it are acked


@dataclass(slots=True)
class _Run:
    """Consecutive batches of one tag, joined into one message unless the limits cut it."""

    tag: str
    parts: list[bytes] = field(default_factory=list)
    count: int = 0
    size: int = 0
    through: int = 0  # the batches of the send up to and with its last one


def chunk_messages(
    batches: list[TagBatch], key_style: KeyStyle, max_records: int, max_bytes: int, gzip: bool, pieces: bool = False
) -> list[Message]:
    """PackedForward messages of at most chunk_limit_records / chunk_limit_size each:
    consecutive batches of one tag are joined, then cut within the limits. With ``pieces``
    a join stops at a batch boundary past ACK_PIECE_BYTES, so that each ack tells how many
    whole batches are delivered."""
    runs: list[_Run] = []
    for i, batch in enumerate(batches):
        entries, n = entries_in_style(batch, key_style)
        last = runs[-1] if runs else None
        if not n:
            if last is not None:  # nothing to send of it: whole with the run before
                last.through = i + 1
            continue
        if last is None or last.tag != batch.tag or (pieces and last.size >= ACK_PIECE_BYTES):
            last = _Run(batch.tag)
            runs.append(last)
        last.parts.append(entries)
        last.count += n
        last.size += len(entries)
        last.through = i + 1
    messages: list[Message] = []
    done = 0
    for run in runs:
        joined = run.parts[0] if len(run.parts) == 1 else b"".join(run.parts)
        cut = split_entries(joined, run.count, max_records, max_bytes)
        for k, (entries, count) in enumerate(cut):
            chunk = base64.b64encode(os.urandom(16)).decode()
            data = fwd.packed_forward(run.tag, entries, count, chunk, compress=gzip)
            # A run's batches are whole once its last message is acked.
            messages.append(Message(data, chunk, len(messages), run.through if k == len(cut) - 1 else done))
        done = run.through
    return messages


def entries_in_style(batch: TagBatch, style: KeyStyle) -> tuple[bytes, int]:
    """The batch's entries as the servers get them: the journal's bytes as they are where nothing
    in them changes, else each record rendered in ``style``. Records are decoded one at a time and
    none is kept (the batch stays undecoded while its messages wait for their acks), and in the
    "snake" style a record with no fields kept outside the spec goes as its journaled bytes."""
    payload = batch.payload
    if payload is not None and (style == "raw" or (style == "snake" and not may_hold_extras(payload))):
        return batch_entries(payload), batch_count(payload)
    packer = msgpack.Packer(unicode_errors="surrogateescape")
    out = []
    pairs = batch.raw_records()
    if pairs is None:
        for time_ns, record in batch.entries:
            out.append(b"\x92" + pack_event_time(time_ns) + packer.pack(render(record, style)))
        return b"".join(out), len(out)
    for time_ns, raw in pairs:
        record = bytes(raw)
        if style == "snake" and not may_hold_extras(record):
            out.append(b"\x92" + pack_event_time(time_ns) + record)
        else:
            out.append(b"\x92" + pack_event_time(time_ns) + packer.pack(render(record_of(raw), style)))
    return b"".join(out), len(out)
