"""The client side (the forward output): messages, the handshake, acks. Pure as well."""

from __future__ import annotations

import gzip
from dataclasses import dataclass

import msgpack

from agent.errors import ProtocolError
from agent.protocol.forward.handshake import password_digest, shared_key_digest


def packed_forward(tag: str, entries: bytes, count: int, chunk: str, *, compress: bool = False) -> bytes:
    """A PackedForward message (CompressedPackedForward with ``compress``) carrying ``chunk``."""
    payload = gzip.compress(entries, compresslevel=6, mtime=0) if compress else entries
    option = {"size": count, "chunk": chunk, "compressed": "gzip" if compress else "text"}
    parts: list[bytes] = [msgpack.packb(tag), msgpack.packb(payload, use_bin_type=True), msgpack.packb(option)]
    return b"\x93" + b"".join(parts)


@dataclass(slots=True)
class Helo:
    nonce: bytes
    auth_salt: bytes
    keepalive: bool


def parse_helo(message: object) -> Helo:
    """``["HELO", {nonce, auth, keepalive}]`` as decoded with raw=True."""
    if not (
        isinstance(message, (list, tuple))
        and len(message) == 2
        and message[0] == b"HELO"
        and isinstance(message[1], dict)
    ):
        raise ProtocolError(f"expected HELO, got {message!r:.80}")
    opts = message[1]
    nonce = opts.get(b"nonce")
    if not isinstance(nonce, bytes):
        raise ProtocolError("HELO has no nonce")
    auth = opts.get(b"auth", b"")
    return Helo(nonce, auth if isinstance(auth, bytes) else b"", bool(opts.get(b"keepalive", True)))


def ping(
    helo: Helo, *, hostname: bytes, shared_key: bytes, salt: bytes, username: bytes = b"", password: bytes = b""
) -> bytes:
    password_hex = password_digest(helo.auth_salt, username, password) if helo.auth_salt else b""
    fields = [hostname, salt, shared_key_digest(salt, hostname, helo.nonce, shared_key), username, password_hex]
    # As Fluentd does: every field a msgpack str (the salt is hex text there and here).
    packer = msgpack.Packer(unicode_errors="surrogateescape")
    message: bytes = packer.pack(["PING", *(f.decode("utf-8", "surrogateescape") for f in fields)])
    return message


def check_pong(message: object, *, helo: Helo, salt: bytes, shared_key: bytes, self_hostname: bytes) -> str | None:
    """None when the PONG authenticates the server, else the reason (Fluentd's out_forward checks)."""
    if not (isinstance(message, (list, tuple)) and len(message) == 5 and message[0] == b"PONG"):
        return f"expected PONG, got {message!r:.80}"
    _, ok, reason, server_hostname, digest = message
    if not ok:
        text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else reason
        return f"authentication refused by the server: {text}"
    if server_hostname == self_hostname:
        return "the server has the same hostname as this client (invalid configuration)"
    if digest != shared_key_digest(salt, server_hostname, helo.nonce, shared_key):
        return "the server's shared key digest does not match"
    return None
