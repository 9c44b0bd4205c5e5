"""The forward output's chunks, made from a send's batches: PackedForward messages within the
chunk limits, each with its chunk id and how many batches are delivered whole once it is acked.
Pure: no I/O."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

import msgpack

from agent.config.types import KeyStyle
from agent.hive.records import may_hold_extras, render
from agent.journal.batch import TagBatch
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


def chunk_messages(
    batches: list[TagBatch], key_style: KeyStyle, max_records: int, max_bytes: int, gzip: bool, pieces: bool = False
) -> list[Message]:
    """PackedForward messages of at most chunk_limit_records / chunk_limit_size each:
    consecutive batches of one tag are joined, then cut within the limits. With ``pieces``
    a join stops at a batch boundary past ACK_PIECE_BYTES, so that each ack tells how many
    whole batches are delivered."""
    runs: list[tuple[str, list[bytes], int, int, int]] = []  # tag, entries, count, bytes, batches so far
    for i, batch in enumerate(batches):
        entries, n = entries_in_style(batch, key_style)
        if not n:
            if runs:  # nothing to send of it: done with the run before
                runs[-1] = (*runs[-1][:4], i + 1)
            continue
        last = runs[-1] if runs else None
        if last is not None and last[0] == batch.tag and not (pieces and last[3] >= ACK_PIECE_BYTES):
            last[1].append(entries)
            runs[-1] = (batch.tag, last[1], last[2] + n, last[3] + len(entries), i + 1)
        else:
            runs.append((batch.tag, [entries], n, len(entries), i + 1))
    messages: list[Message] = []
    done = 0
    for tag, parts, n, _, through in runs:
        joined = parts[0] if len(parts) == 1 else b"".join(parts)
        cut = split_entries(joined, n, max_records, max_bytes)
        for k, (entries, count) in enumerate(cut):
            chunk = base64.b64encode(os.urandom(16)).decode()
            data = fwd.packed_forward(tag, entries, count, chunk, compress=gzip)
            # A run's batches are whole once its last message is acked.
            messages.append(Message(data, chunk, len(messages), through if k == len(cut) - 1 else done))
        done = through
    return messages


def entries_in_style(batch: TagBatch, style: KeyStyle) -> tuple[bytes, int]:
    """The batch's entries as the servers get them: the journal's bytes as they are where nothing
    in them changes, else each record rendered in ``style``."""
    payload = batch.payload
    if payload is not None and (style == "raw" or (style == "snake" and not may_hold_extras(payload))):
        return batch_entries(payload), batch_count(payload)
    packer = msgpack.Packer(unicode_errors="surrogateescape")
    out = []
    for time_ns, record in batch.entries:
        record = render(record, style)
        out.append(b"\x92" + pack_event_time(time_ns) + packer.pack(record))
    return b"".join(out), len(out)
