"""``type = "hive"``: normalize purchase records to the Hive purchase_log spec at ingest.

A record is journaled as the spec's fields (snake_case) plus the fields
outside the spec that the vendor mirrors need (agent/hive/records.py); the
outputs that speak to Hive leave those out. Every finding is counted by field
and rule (``hive_agent_invalid_events_total``). Without ``strict`` (the
default) findings are warnings and the record goes on as sent; with it, a
record that breaks a rule of the spec is refused with every reason (field,
value, rule) and counted; the ingest step dead-letters it, never drops it.

A purchase and its refund (same transaction_id, marked by ``refund_field``)
are two events: duplicates are found by (app_id, transaction_id, refund).
"""

from __future__ import annotations

import collections
import logging

from agent.component import Filter, Filtered
from agent.filters.dedup import DedupStore
from agent.hive.fast_path import encode_batch, try_fast_batch
from agent.hive.purchase_log import normalize
from agent.hive.records import is_refund, with_extra
from agent.protocol.forward import unpack_event_time

log = logging.getLogger("agent.filter.hive")


class HiveFilter(Filter):
    def __init__(self, cfg, dedup: DedupStore | None = None):
        self.name = cfg.name
        self.strict = cfg.strict
        self.refund_field = cfg.refund_field
        self.refund_values = tuple(cfg.refund_values)
        self.dedup = dedup
        self.stats = {
            "valid": 0,
            "invalid": 0,
            "warnings": 0,
            "duplicates": 0,
            "invalid_by_rule": collections.Counter(),
        }

    def apply(self, tag: str, entries: list) -> Filtered:
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
        self.stats["valid"] += len(normalized)
        self.stats["warnings"] += warned
        if rejected:
            self.stats["invalid"] += len(rejected)
            log.warning(
                "filter %s: tag %s: %d of %d records invalid, dead-lettered (first: %s)",
                self.name,
                tag,
                len(rejected),
                len(entries),
                rejected[0][3],
            )
        if self.dedup is None:
            return Filtered(normalized, refused=rejected)
        kept = self._dedup(tag, normalized, [self._key(r) for _, r in normalized])
        kept.refused = rejected
        return kept

    def apply_batch(self, tag: str, entries: bytes, count: int) -> Filtered | None:
        """The whole batch at once when every record is already canonical and valid
        (agent/hive/fast_path.py); None sends it the per-record way."""
        pairs = try_fast_batch(entries, count, tag)
        if pairs is None:
            return None
        self.stats["valid"] += len(pairs)
        if self.dedup is None:
            return Filtered(encode_batch(pairs), len(pairs))
        # An entry of this path has no field outside the spec, so no refund flag.
        kept = self._dedup(
            tag, pairs, [(r.app_id, r.transaction_id, False) if r.transaction_id else None for _, r in pairs]
        )
        kept.count = len(kept.entries)
        kept.entries = encode_batch(kept.entries)
        return kept

    def _key(self, record: dict):
        """(app_id, transaction_id, refund), or None when the record has no usable key."""
        app, txn = record.get("app_id"), record.get("transaction_id")
        if not (isinstance(app, str) and isinstance(txn, str) and txn):
            return None  # lenient mode keeps such a record: it is not anybody's duplicate
        return app, txn, is_refund(record, self.refund_field, self.refund_values)

    def _dedup(self, tag: str, entries: list, keys: list) -> Filtered:
        """The entries that are nobody's duplicate; their keys stay reserved until the
        ingest step says whether the entries reached the journal."""
        dedup = self.dedup
        known = dedup.committed([k for k in keys if k is not None])
        kept = []
        reserved = []
        for entry, key in zip(entries, keys):
            if key is None:
                kept.append(entry)
                continue
            if key in known or key in dedup.pending:
                self.stats["duplicates"] += 1
                continue
            dedup.reserve(key)
            reserved.append(key)
            kept.append(entry)
        if len(kept) < len(entries):
            log.info(
                "filter %s: tag %s: %d duplicate purchases dropped (transaction_id seen within the window)",
                self.name,
                tag,
                len(entries) - len(kept),
            )
        if not reserved:
            return Filtered(kept)

        def on_durable(durable: bool) -> None:
            if durable:
                dedup.commit(reserved)
            else:
                dedup.release(reserved)

        return Filtered(kept, on_durable=on_durable)


def _ns(time_ext) -> int:
    data = getattr(time_ext, "data", None)  # msgspec's Ext or msgpack's ExtType
    if data is not None:
        return unpack_event_time(data)
    return int(time_ext) * 1_000_000_000
