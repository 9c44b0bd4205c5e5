"""The shared-key handshake, server side (HELO, PING, PONG; users). Nonce and salts are passed
in, so the code is pure and can be checked against captured sessions."""

from __future__ import annotations

import hashlib

import msgpack

from agent.protocol.forward.frames import Ping


def _sha512_hex(*parts: bytes) -> bytes:
    h = hashlib.sha512()
    for p in parts:
        h.update(p)
    return h.hexdigest().encode()


def helo(nonce: bytes, auth_salt: bytes, keepalive: bool = True) -> bytes:
    message: bytes = msgpack.packb(
        ["HELO", {"nonce": nonce, "auth": auth_salt, "keepalive": keepalive}], use_bin_type=True
    )
    return message


def pong(ok: bool, reason: str, self_hostname: bytes, digest: bytes) -> bytes:
    # Fluentd packs the hostname and digest as str; so do we.
    message: bytes = msgpack.packb(
        ["PONG", ok, reason, self_hostname.decode("utf-8", "replace"), digest.decode("ascii")], use_bin_type=True
    )
    return message


def shared_key_digest(salt: bytes, hostname: bytes, nonce: bytes, shared_key: bytes) -> bytes:
    return _sha512_hex(salt, hostname, nonce, shared_key)


def password_digest(auth_salt: bytes, username: bytes, password: bytes) -> bytes:
    return _sha512_hex(auth_salt, username, password)


def check_ping(
    ping: Ping,
    *,
    nonce: bytes,
    auth_salt: bytes,
    shared_key: bytes,
    self_hostname: bytes,
    users: dict[bytes, bytes] | None = None,
) -> tuple[bool, str, bytes]:
    """Verify a PING; return (ok, reason, PONG bytes) as Fluentd's in_forward does."""
    if ping.hostname == self_hostname:
        reason = "same hostname between input and output: invalid configuration"
    elif ping.digest != shared_key_digest(ping.shared_key_salt, ping.hostname, nonce, shared_key):
        reason = "shared_key mismatch"
    elif users and (
        ping.username not in users or ping.password != password_digest(auth_salt, ping.username, users[ping.username])
    ):
        reason = "username/password mismatch"
    else:
        digest = shared_key_digest(ping.shared_key_salt, self_hostname, nonce, shared_key)
        return True, "", pong(True, "", self_hostname, digest)
    return False, reason, pong(False, reason, b"", b"")
