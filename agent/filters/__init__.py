"""Filters run at ingest, in config order, on the events whose tag they match.

Ingest keeps records as msgpack bytes; only batches whose tag some filter
matches are decoded, changed and packed again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import msgpack
import msgspec

from agent.component import Filter
from agent.event import other_ext
from agent.protocol.forward import array_items
from agent.routing import compile_pattern


def _record_transformer(cfg, deadletters, data_dir) -> Filter:
    from agent.filters.record_transformer import RecordTransformer
    return RecordTransformer(cfg)


def _hive(cfg, deadletters, data_dir) -> Filter:
    from agent.filters.dedup import DedupStore
    from agent.filters.hive import HiveFilter
    dedup = None
    if cfg.dedup_window > 0:
        dedup = DedupStore(Path(data_dir) / "state" / f"dedup-{cfg.name}.sqlite", cfg.dedup_window)
    return HiveFilter(cfg, deadletters, dedup)


BUILDERS = {"record_transformer": _record_transformer, "hive": _hive}


class FilterChain:
    def __init__(self, configs=(), deadletters=None, data_dir="var"):
        self._filters = [(compile_pattern(c.match), BUILDERS[c.type](c, deadletters, data_dir)) for c in configs]
        self._applies: dict[str, list[Filter]] = {}

    @property
    def filters(self) -> list[Filter]:
        """The filters, in config order."""
        return [f for _, f in self._filters]

    def _for(self, tag: str) -> list[Filter]:
        found = self._applies.get(tag)
        if found is None:
            if len(self._applies) > 4096:
                self._applies.clear()
            found = self._applies[tag] = [f for matches, f in self._filters if matches(tag)]
        return found

    def applies(self, tag: str) -> bool:
        return bool(self._filters) and bool(self._for(tag))

    def apply(self, tag: str, entries: bytes, count: int) -> tuple[bytes, int, Callable[[bool], None] | None]:
        """Run the filters; returns the entries, their count, and a callable to tell
        the filters whether the result reached the journal (or None)."""
        filters = self._for(tag)
        if len(filters) == 1 and hasattr(filters[0], "apply_batch"):
            # A filter that can take the batch as bytes, when all of it is plain sailing.
            done = filters[0].apply_batch(tag, entries, count)
            if done is not None:
                settle = filters[0].take_settle()
                return done[0], done[1], settle
        pairs = _decode(entries, count)  # [[EventTime ext, record], ...]
        settles = []
        for f in self._for(tag):
            pairs = f.apply(tag, pairs)
            settle = f.take_settle()
            if settle is not None:
                settles.append(settle)
        return _encode(pairs), len(pairs), _combine(settles)


# msgspec decodes and encodes a batch in one call each, about twice as fast as
# msgpack-python; msgpack takes over for what msgspec refuses (invalid UTF-8).
_decoder = msgspec.msgpack.Decoder()
_encoder = msgspec.msgpack.Encoder()


def _decode(entries: bytes, count: int) -> list:
    try:
        return _decoder.decode(b"\xdd" + count.to_bytes(4, "big") + entries)
    except (msgspec.DecodeError, ValueError):
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, unicode_errors="surrogateescape",
                                    max_buffer_size=max(len(entries), 1024), ext_hook=other_ext)
        unpacker.feed(entries)
        return list(unpacker)


def _encode(pairs: list) -> bytes:
    try:
        data = _encoder.encode(pairs)
    except (TypeError, ValueError, UnicodeEncodeError):
        packer = msgpack.Packer(unicode_errors="surrogateescape")
        return b"".join(packer.pack(p) for p in pairs)
    return array_items(data)


def _combine(settles: list):
    if not settles:
        return None

    def settle(durable: bool) -> None:
        for s in settles:
            s(durable)

    return settle
