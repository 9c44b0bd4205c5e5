"""``type = "hive"``: normalize purchase records to the Hive purchase_log spec at ingest.

A record is journaled as the spec's fields (snake_case) plus the fields
outside the spec that the vendor mirrors need (agent/hive/records.py); the
outputs that speak to Hive leave those out. Every finding is counted by field
and rule (``hive_agent_invalid_events_total``). Without ``strict`` (the
default) findings are warnings and the record goes on as sent; with it, a
record that breaks a rule of the spec goes to the dead-letter store with every
reason (field, value, rule) and is counted, never dropped silently.

A purchase and its refund (same transaction_id, marked by ``refund_field``)
are two events: duplicates are found by (app_id, transaction_id, refund).
"""

from __future__ import annotations

import collections
import logging

from agent.component import Filter
from agent.filters.dedup import DedupStore
from agent.hive.fast_path import encode_batch, try_fast_batch
from agent.hive.purchase_log import normalize
from agent.hive.records import is_refund, with_extra
from agent.protocol.forward import unpack_event_time

log = logging.getLogger("agent.filter.hive")


class HiveFilter(Filter):
    def __init__(self, cfg, deadletters, dedup: DedupStore | None = None):
        self.name = cfg.name
        self.strict = cfg.strict
        self.refund_field = cfg.refund_field
        self.refund_values = tuple(cfg.refund_values)
        self.deadletters = deadletters
        self.dedup = dedup
        self.stats = {"valid": 0, "invalid": 0, "warnings": 0, "duplicates": 0,
                      "invalid_by_rule": collections.Counter()}
        self._reserved: list = []

    def apply(self, tag: str, entries: list) -> list:
        normalized = []
        rejected = []
        warned = 0
        by_rule = self.stats["invalid_by_rule"]
        for time_ext, record in entries:
            if not isinstance(record, dict):
                continue
            result = normalize(record, tag, strict=self.strict, in_place=True)
            if result.warnings:
                warned += 1
                by_rule.update((p.field, p.rule) for p in result.warnings)
            if not result.ok:
                by_rule.update((p.field, p.rule) for p in result.errors)
                rejected.append((tag, _ns(time_ext), record, "; ".join(str(p) for p in result.errors)))
                continue
            normalized.append([time_ext, with_extra(result.record, result.extra)])
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
            # An entry of this path has no field outside the spec, so no refund flag.
            pairs = self._dedup(tag, pairs, [(r.app_id, r.transaction_id, False) if r.transaction_id else None
                                             for _, r in pairs])
        return encode_batch(pairs), len(pairs)

    def _drop_duplicates(self, tag: str, entries: list) -> list:
        return self._dedup(tag, entries, [self._key(r) for _, r in entries])

    def _key(self, record: dict):
        """(app_id, transaction_id, refund), or None when the record has no usable key."""
        app, txn = record.get("app_id"), record.get("transaction_id")
        if not (isinstance(app, str) and isinstance(txn, str) and txn):
            return None  # lenient mode keeps such a record: it is not anybody's duplicate
        return app, txn, is_refund(record, self.refund_field, self.refund_values)

    def _dedup(self, tag: str, entries: list, keys: list) -> list:
        known = self.dedup.committed([k for k in keys if k is not None])
        kept = []
        for entry, key in zip(entries, keys):
            if key is None:
                kept.append(entry)
                continue
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
