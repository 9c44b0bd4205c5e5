"""Helpers that build and read Forward-protocol bytes the way senders do (test side)."""

from __future__ import annotations

import struct

import msgpack

from agent.protocol.forward import EventBatch, unpack_event_time


def event_time(sec: int, nsec: int = 0, ext8: bool = False) -> msgpack.ExtType | bytes:
    return msgpack.ExtType(0, struct.pack(">II", sec, nsec))


def pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def entries_of(batch: EventBatch) -> list[tuple[int, dict]]:
    """Canonical entries of a decoded batch → [(time_ns, record)], checking they are canonical."""
    out = []
    u = msgpack.Unpacker(raw=False, strict_map_key=False)
    u.feed(batch.entries)
    for entry in u:
        assert len(entry) == 2, entry
        t, rec = entry
        assert isinstance(t, msgpack.ExtType) and t.code == 0 and len(t.data) == 8, t
        assert isinstance(rec, dict)
        out.append((unpack_event_time(t.data), rec))
    assert len(out) == batch.count
    return out


class ForwardClient:
    """A minimal blocking Forward client: PackedForward chunks, each waiting for its ack."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0, source_address=None):
        import socket

        self.sock = socket.create_connection((host, port), timeout=timeout, source_address=source_address)
        self.unpacker = msgpack.Unpacker(raw=False)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_object(self):
        while True:
            try:
                return next(self.unpacker)
            except StopIteration:
                pass
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed by the agent")
            self.unpacker.feed(data)

    def send_chunk(self, tag: str, entries: list, chunk: str) -> None:
        payload = b"".join(pack(e) for e in entries)
        self.send(pack([tag, payload, {"chunk": chunk, "size": len(entries)}]))
        reply = self.recv_object()
        if reply != {"ack": chunk}:
            raise AssertionError(f"unexpected reply {reply!r}")

    def close(self) -> None:
        self.sock.close()
