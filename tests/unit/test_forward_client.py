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
        ours = fwd.ping(helo, hostname=doc["client_hostname"].encode(), shared_key=doc["shared_key"].encode(),
                        salt=salt)
        assert ours == bytes.fromhex(msgs["PING"]["raw_hex"])
        pong = msgpack.unpackb(bytes.fromhex(msgs["PONG"]["raw_hex"]), raw=True)
        assert fwd.check_pong(pong, helo=helo, salt=salt, shared_key=doc["shared_key"].encode(),
                              self_hostname=doc["client_hostname"].encode()) is None
        assert "does not match" in fwd.check_pong(pong, helo=helo, salt=salt, shared_key=b"wrong",
                                                  self_hostname=doc["client_hostname"].encode())
        assert "same hostname" in fwd.check_pong(pong, helo=helo, salt=salt, shared_key=doc["shared_key"].encode(),
                                                 self_hostname=doc["server_hostname"].encode())


def test_a_refused_pong_names_the_servers_reason():
    helo = fwd.Helo(b"n" * 16, b"", True)
    assert fwd.check_pong([b"PONG", False, b"shared_key mismatch", b"", b""], helo=helo, salt=b"s", shared_key=b"k",
                          self_hostname=b"me") == "authentication refused by the server: shared_key mismatch"


def test_packed_forward_messages_decode_with_our_own_server_codec():
    entries = b"".join(msgpack.packb([msgpack.ExtType(0, bytes(8)), {"i": i}]) for i in range(3))
    for compress in (False, True):
        msg = fwd.packed_forward("t.x", entries, 3, "abc==", compress=compress)
        [batch] = fwd.ForwardDecoder().feed(msg, 0)
        assert batch.count == 3 and batch.chunk == msgpack.packb("abc==") and batch.tag == "t.x"
        assert batch.mode == ("compressed_packed_forward" if compress else "packed_forward")
