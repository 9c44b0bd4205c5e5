"""``type = "hive"``: normalize purchase records to the Hive purchase_log spec at ingest.

A valid record is journaled as the spec's fields (snake_case) plus, under
``EXTRA_KEY``, the fields outside the spec that the vendor mirrors need; the
outputs that speak to Hive never send that key. A record that cannot be made
valid goes to the dead-letter store with every reason (field, value, rule) and
is counted; it is never dropped silently. Warnings are counted and logged.
"""

from __future__ import annotations

import collections
import logging

from agent.component import Filter
from agent.filters.dedup import DedupStore
from agent.hive.fast_path import encode_batch, try_fast_batch
from agent.hive.purchase_log import normalize
from agent.protocol.forward import unpack_event_time

log = logging.getLogger("agent.filter.hive")

EXTRA_KEY = "_extra"


class HiveFilter(Filter):
    def __init__(self, cfg, deadletters, dedup: DedupStore | None = None):
        self.name = cfg.name
        self.strict = cfg.strict
        self.deadletters = deadletters
        self.dedup = dedup
        self.stats = {"valid": 0, "invalid": 0, "warnings": 0, "duplicates": 0,
                      "invalid_by_rule": collections.Counter()}
        self._reserved: list = []

    def apply(self, tag: str, entries: list) -> list:
        normalized = []
        rejected = []
        warned = 0
        for time_ext, record in entries:
            if not isinstance(record, dict):
                continue
            result = normalize(record, tag, strict=self.strict, in_place=True)
            if result.warnings:
                warned += 1
            if not result.ok:
                self.stats["invalid_by_rule"].update((p.field, p.rule) for p in result.errors)
                rejected.append((tag, _ns(time_ext), record, "; ".join(str(p) for p in result.errors)))
                continue
            clean = result.record
            if result.extra:
                clean[EXTRA_KEY] = result.extra
            normalized.append([time_ext, clean])
        kept = self._drop_duplicates(tag, normalized) if self.dedup is not None else normalized
        self.stats["valid"] += len(normalized)
        self.stats["warnings"] += warned
        if rejected:
            self.stats["invalid"] += len(rejected)
            self.deadletters.write_records(self.name, rejected)
            log.warning("filter %s: tag %s: %d of %d records invalid, dead-lettered (first: %s)",
                        self.name, tag, len(rejected), len(entries), rejected[0][3])
        return kept


    def apply_batch(self, tag: str, entries: bytes, count: int) -> tuple[bytes, int] | None:
        """The whole batch at once when every record is already canonical and valid
        (agent/hive/fast_path.py); None sends it the per-record way."""
        pairs = try_fast_batch(entries, count, tag)
        if pairs is None:
            return None
        self.stats["valid"] += len(pairs)
        if self.dedup is not None:
            pairs = self._dedup(tag, pairs, [(r.app_id, r.transaction_id) for _, r in pairs])
        return encode_batch(pairs), len(pairs)

    def _drop_duplicates(self, tag: str, entries: list) -> list:
        return self._dedup(tag, entries, [(str(r.get("app_id")), str(r.get("transaction_id"))) for _, r in entries])

    def _dedup(self, tag: str, entries: list, keys: list) -> list:
        known = self.dedup.committed(keys)
        kept = []
        for entry, key in zip(entries, keys):
            if key in known or key in self.dedup.pending:
                self.stats["duplicates"] += 1
                continue
            self.dedup.reserve(key)
            self._reserved.append(key)
            kept.append(entry)
        if len(kept) < len(entries):
            log.info("filter %s: tag %s: %d duplicate purchases dropped (transaction_id seen within the window)",
                     self.name, tag, len(entries) - len(kept))
        return kept

    def take_settle(self):
        """After apply: a callable told whether the kept records reached the journal."""
        if not self._reserved:
            return None
        keys, self._reserved = self._reserved, []
        dedup = self.dedup

        def settle(durable: bool) -> None:
            if durable:
                dedup.commit(keys)
            else:
                dedup.release(keys)

        return settle


def _ns(time_ext) -> int:
    data = getattr(time_ext, "data", None)  # msgspec's Ext or msgpack's ExtType
    if data is not None:
        return unpack_event_time(data)
    return int(time_ext) * 1_000_000_000
