"""The forward output's side of the protocol, against the Fluentd 1.18 captures."""

import json
from pathlib import Path

import msgpack

from agent.protocol import forward as fwd

FLUENTD = Path(__file__).parent.parent / "vectors" / "fluentd-1.18-out_forward"


def test_our_ping_is_fluentds_ping_byte_for_byte_and_we_accept_its_pong():
    for session in sorted(FLUENTD.glob("session-*.json")):
        doc = json.loads(session.read_text())
        msgs = {m["kind"]: m for m in doc["messages"]}
        helo = fwd.parse_helo(msgpack.unpackb(bytes.fromhex(msgs["HELO"]["raw_hex"]), raw=True))
        captured_ping = msgpack.unpackb(bytes.fromhex(msgs["PING"]["raw_hex"]), raw=True)
        salt = captured_ping[2]
        ours = fwd.ping(
            helo, hostname=doc["client_hostname"].encode(), shared_key=doc["shared_key"].encode(), salt=salt
        )
        assert ours == bytes.fromhex(msgs["PING"]["raw_hex"])
        pong = msgpack.unpackb(bytes.fromhex(msgs["PONG"]["raw_hex"]), raw=True)
        assert (
            fwd.check_pong(
                pong,
                helo=helo,
                salt=salt,
                shared_key=doc["shared_key"].encode(),
                self_hostname=doc["client_hostname"].encode(),
            )
            is None
        )
        assert "does not match" in fwd.check_pong(
            pong, helo=helo, salt=salt, shared_key=b"wrong", self_hostname=doc["client_hostname"].encode()
        )
        assert "same hostname" in fwd.check_pong(
            pong,
            helo=helo,
            salt=salt,
            shared_key=doc["shared_key"].encode(),
            self_hostname=doc["server_hostname"].encode(),
        )


def test_a_refused_pong_names_the_servers_reason():
    helo = fwd.Helo(b"n" * 16, b"", True)
    assert (
        fwd.check_pong(
            [b"PONG", False, b"shared_key mismatch", b"", b""],
            helo=helo,
            salt=b"s",
            shared_key=b"k",
            self_hostname=b"me",
        )
        == "authentication refused by the server: shared_key mismatch"
    )


def test_packed_forward_messages_decode_with_our_own_server_codec():
    entries = b"".join(msgpack.packb([msgpack.ExtType(0, bytes(8)), {"i": i}]) for i in range(3))
    for compress in (False, True):
        msg = fwd.packed_forward("t.x", entries, 3, "abc==", compress=compress)
        [batch] = fwd.ForwardDecoder().feed(msg, 0)
        assert batch.count == 3 and batch.chunk == msgpack.packb("abc==") and batch.tag == "t.x"
        assert batch.mode == ("compressed_packed_forward" if compress else "packed_forward")


def test_entries_are_cut_and_merged_into_chunks_within_the_limits():
    from agent.journal.batch import TagBatch
    from agent.journal.record import batch_payload
    from agent.outputs.forward import ForwardOutput, ForwardOutputConfig
    from agent.protocol.forward.entries import split_entries

    entry = lambda i: msgpack.packb([msgpack.ExtType(0, bytes(8)), {"i": i, "pad": "x" * 50}])  # noqa: E731
    entries = b"".join(entry(i) for i in range(10))
    pieces = list(split_entries(entries, 10, 4, 10**6))
    assert [n for _, n in pieces] == [4, 4, 2] and b"".join(p for p, _ in pieces) == entries
    by_size = list(split_entries(entries, 10, 100, 3 * len(entry(0))))
    assert [n for _, n in by_size] == [3, 3, 3, 1]

    cfg = ForwardOutputConfig.validate(dict(type="forward", name="f", servers=[{"host": "h"}], chunk_limit_records=5))
    out = ForwardOutput(cfg)
    batches = [
        TagBatch("a", payload=batch_payload("a", entries[: len(entry(0)) * 3], 3)),
        TagBatch("a", payload=batch_payload("a", entries[len(entry(0)) * 3 :], 7)),
        TagBatch("b", payload=batch_payload("b", entry(99), 1)),
    ]
    messages = out._messages(batches)
    decoded = [fwd.ForwardDecoder().feed(m.data, 0)[0] for m in messages]
    assert [(d.tag, d.count) for d in decoded] == [("a", 5), ("a", 5), ("b", 1)]
    assert len({m.chunk for m in messages}) == 3
    # Each message says how many batches are whole once it and those before it are acked: the
    # two "a" batches only with the second "a" message.
    assert [m.done for m in messages] == [0, 2, 3]
