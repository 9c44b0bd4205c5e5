"""Decompression, bounded: a decompression bomb is a fatal protocol error."""

from __future__ import annotations

import io
import zlib

from agent.errors import ProtocolError


def gunzip(payload: bytes, limit: int) -> bytes:
    """Decompress one or more concatenated gzip members, at most ``limit`` bytes."""
    out = bytearray()
    data = payload
    while data:
        d = zlib.decompressobj(31)
        pending = data
        while True:
            try:
                out += d.decompress(pending, limit - len(out) + 1)
            except zlib.error as exc:
                raise ProtocolError(f"invalid gzip payload: {exc}") from None
            if len(out) > limit:
                raise ProtocolError(f"decompressed payload exceeds {limit} bytes")
            pending = d.unconsumed_tail
            if d.eof or not pending:
                break
        if not d.eof:
            raise ProtocolError("truncated gzip payload")
        data = d.unused_data.lstrip(b"\x00")
    return bytes(out)


def unzstd(payload: bytes, limit: int) -> bytes:
    """Decompress zstd frames, at most ``limit`` bytes."""
    import zstandard

    try:
        reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(payload), read_across_frames=True)
        out = reader.read(limit + 1)
    except zstandard.ZstdError as exc:
        raise ProtocolError(f"invalid zstd payload: {exc}") from None
    if len(out) > limit:
        raise ProtocolError(f"decompressed payload exceeds {limit} bytes")
    return out


def decompress(payload: bytes, method: bytes | None, limit: int) -> bytes:
    # Fluent Bit trusts magic bytes over the option; a canonical entry starts with
    # an array header, so these magics can never be uncompressed entries.
    if method == b"gzip" or (method is None and payload[:2] == b"\x1f\x8b"):
        return gunzip(payload, limit)
    if method == b"zstd" or (method is None and payload[:4] == b"\x28\xb5\x2f\xfd"):
        return unzstd(payload, limit)
    if method in (None, b"text", b""):
        return payload
    raise ProtocolError(f"unsupported compression {method!r}")
