"""Filters run at ingest, in config order, on the events whose tag they match.

Ingest keeps records as msgpack bytes; only batches whose tag some filter
matches are decoded, changed and packed again.
"""

from __future__ import annotations

import msgpack

from agent.component import Filter
from agent.routing import compile_pattern


def _record_transformer(cfg, deadletters) -> Filter:
    from agent.filters.record_transformer import RecordTransformer
    return RecordTransformer(cfg)


def _hive(cfg, deadletters) -> Filter:
    from agent.filters.hive import HiveFilter
    return HiveFilter(cfg, deadletters)


BUILDERS = {"record_transformer": _record_transformer, "hive": _hive}


class FilterChain:
    def __init__(self, configs=(), deadletters=None):
        self._filters = [(compile_pattern(c.match), BUILDERS[c.type](c, deadletters)) for c in configs]
        self._applies: dict[str, list[Filter]] = {}

    def _for(self, tag: str) -> list[Filter]:
        found = self._applies.get(tag)
        if found is None:
            if len(self._applies) > 4096:
                self._applies.clear()
            found = self._applies[tag] = [f for matches, f in self._filters if matches(tag)]
        return found

    def applies(self, tag: str) -> bool:
        return bool(self._filters) and bool(self._for(tag))

    def apply(self, tag: str, entries: bytes) -> tuple[bytes, int]:
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, unicode_errors="surrogateescape",
                                    max_buffer_size=max(len(entries), 1024))
        unpacker.feed(entries)
        pairs = list(unpacker)  # [[EventTime ext, record], ...]
        for f in self._for(tag):
            pairs = f.apply(tag, pairs)
        packer = msgpack.Packer(unicode_errors="surrogateescape")
        return b"".join(packer.pack(p) for p in pairs), len(pairs)
