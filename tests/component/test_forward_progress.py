"""A forward send cut short: the chunks the server acked are not sent again (the delivery loop
saves its cursor as the acks come), only those it had not acked yet."""

import asyncio
import collections
import io

import msgpack

from agent.deadletter import DeadLetterStore
from agent.delivery.runner import OutputRunner
from agent.journal.cursor import CursorStore
from agent.outputs.forward import ForwardOutput, ForwardOutputConfig
from agent.outputs.forward_chunks import ACK_PIECE_BYTES
from agent.protocol.forward import EventBatch, ForwardDecoder, ack_bytes
from tests.unit.test_delivery import fill

BATCHES, PER_BATCH = 8, 70  # journal records of about 70 KiB each: one chunk per batch


class CutShortServer:
    """Acks the first ``acks`` chunks of its first connection, then hangs up on it; acks every chunk
    after that. Counts every record it read, acked or not."""

    def __init__(self, acks: int):
        self.acks = acks
        self.connections = 0
        self.seen: collections.Counter[int] = collections.Counter()
        self.acked_first: set[int] = set()  # the records of the chunks it acked before hanging up

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        first, acked = self.connections == 1, 0
        decoder = ForwardDecoder()
        while data := await reader.read(1 << 16):
            for frame in decoder.feed(data, 0):
                if not isinstance(frame, EventBatch):
                    continue
                ids = [
                    record["i"] for entries, _ in frame.records() for _, record in msgpack.Unpacker(io.BytesIO(entries))
                ]
                self.seen.update(ids)
                if first and acked == self.acks:
                    writer.close()
                    return
                acked += 1
                if first:
                    self.acked_first.update(ids)
                writer.write(ack_bytes(frame.chunk))
        writer.close()


async def test_a_send_cut_short_sends_again_only_the_chunks_not_acked(tmp_path):
    pad = "x" * 1000
    await fill(
        tmp_path / "journal",
        [("t", list(range(b * PER_BATCH, (b + 1) * PER_BATCH))) for b in range(BATCHES)],
        extra={"pad": pad},
    )
    server = CutShortServer(acks=3)
    listening = await asyncio.start_server(server.serve, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    cfg = ForwardOutputConfig.validate(
        {
            "type": "forward",
            "name": "hive",
            "servers": [{"host": "127.0.0.1", "port": port}],
            "require_ack_response": True,
            "recover_wait": 0.05,
            "retry_wait": 0.05,
            "heartbeat_type": "none",
            "key_style": "raw",
        }
    )
    out = ForwardOutput(cfg)
    await out.start()
    runner = OutputRunner(
        cfg, out, tmp_path / "journal", CursorStore(tmp_path / "cursors"), DeadLetterStore(tmp_path / "dead")
    )
    draining, stopping = asyncio.Event(), asyncio.Event()
    draining.set()
    try:
        await asyncio.wait_for(runner.run(draining, stopping), 20)
    finally:
        await out.close()
        listening.close()
    total = BATCHES * PER_BATCH
    assert set(server.seen) == set(range(total))
    assert len(server.acked_first) == 3 * PER_BATCH  # three chunks of one batch each (64 KiB pieces)
    assert all(server.seen[i] == 1 for i in server.acked_first)  # acked: never sent again
    again = sum(n - 1 for n in server.seen.values())
    assert 0 < again <= total - 3 * PER_BATCH
    assert runner.stats.retries >= 1 and runner.stats.sent_records == total
    assert PER_BATCH * len(pad) > ACK_PIECE_BYTES  # the batches are the size the test means
