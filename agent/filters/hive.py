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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec

from agent.component import Filter, Filtered, Metric, Reading
from agent.config.types import Duration, FilterConfigBase, MatchPattern
from agent.hive.dedup_store import DedupStore, Key
from agent.hive.fast_path import fast_batch, forget_values
from agent.hive.purchase_log import normalize
from agent.hive.records import REFUND_VALUES, field_of, refund_state, with_extra
from agent.hive.spec import spec_name
from agent.log import peer_text
from agent.paths import file_name
from agent.protocol.event_time import ns_of

log = logging.getLogger("agent.filter.hive")


class HiveFilterConfig(FilterConfigBase, frozen=True, kw_only=True):
    """Normalize purchase records to the Hive purchase_log spec (agent/hive/purchase_log.py)."""

    type: Literal["hive"]
    match: MatchPattern = "ha2union.game.*.purchase_log"
    # strict: every spec violation dead-letters the record; otherwise (the default) it is
    # kept as sent and warned, and the mirrors refuse what they cannot send.
    strict: bool = False
    # A purchase (app_id, transaction_id, refund) seen within this window is delivered once; 0 turns it off.
    dedup_window: Duration = 7 * 86400.0
    # The field that marks a record as the refund of a purchase (same transaction_id).
    refund_field: str = "refund"
    refund_values: list[Any] = msgspec.field(default_factory=lambda: list(REFUND_VALUES))


@dataclass(slots=True)
class HiveStats:
    valid: int = 0  # passed on
    invalid: int = 0  # refused (strict), dead-lettered
    warnings: int = 0  # passed on with a finding
    duplicates: int = 0
    invalid_by_rule: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    # Duplicates dropped, by (tag, purchase_time, timezone), until the ledger takes them.
    duplicates_by_time: collections.Counter[tuple[str, Any, Any]] = field(default_factory=collections.Counter)


class HiveFilter(Filter):
    def __init__(self, cfg: HiveFilterConfig, dedup: DedupStore | None = None):
        self.name = cfg.name
        self.strict = cfg.strict
        self.refund_field = cfg.refund_field
        self.refund_values = tuple(cfg.refund_values)
        self.dedup = dedup
        self.stats = HiveStats()

    def carry_over(self, previous: Filter) -> None:
        """The same name is the same store file: keep the open store (its pending keys belong to
        batches not yet durable) under the new window, and the counters."""
        if not isinstance(previous, HiveFilter):
            return
        self.stats = previous.stats
        if previous.dedup is not None and self.dedup is not None and previous.dedup.path == self.dedup.path:
            self.dedup.close()
            previous.dedup.window = self.dedup.window
            self.dedup = previous.dedup
        elif previous.dedup is not None:
            previous.dedup.close()

    def close(self) -> None:
        if self.dedup is not None:
            self.dedup.close()

    def emitted(self) -> int:
        return self.stats.valid

    def readings(self) -> Iterable[Reading]:
        st = self.stats
        yield Reading(Metric.RECEIVED, st.valid + st.invalid)
        yield Reading(Metric.DEAD_LETTERED, st.invalid)
        yield Reading(Metric.DISCARDED, st.duplicates, ("duplicate",))
        yield Reading(Metric.DEDUP_HITS, st.duplicates)
        yield Reading(Metric.NORMALIZATION_WARNINGS, st.warnings)
        for (fld, rule), n in st.invalid_by_rule.items():
            yield Reading(Metric.INVALID, n, (fld, rule))

    def shrink(self) -> None:
        if self.dedup is not None:
            self.dedup.shrink()
        forget_values()  # the fast path's cache of the burst's values

    def take_duplicates(self) -> collections.Counter[tuple[str, Any, Any]]:
        """The duplicates dropped since the last call, by (tag, purchase_time, timezone): the ledger's."""
        taken, self.stats.duplicates_by_time = self.stats.duplicates_by_time, collections.Counter()
        return taken

    def apply(self, tag: str, entries: list[Any]) -> Filtered[list[Any]]:
        normalized = []
        rejected = []
        warned = unknown_refunds = 0
        first_unknown: Any = None
        by_rule = self.stats.invalid_by_rule
        for time_ext, record in entries:
            if not isinstance(record, dict):
                continue
            result = normalize(record, tag, strict=self.strict, in_place=True)
            if result.warnings:
                warned += 1
                by_rule.update((_field_label(p.field), p.rule) for p in result.warnings)
            if not result.ok:
                by_rule.update((_field_label(p.field), p.rule) for p in result.errors)
                rejected.append((tag, ns_of(time_ext), record, "; ".join(str(p) for p in result.errors)))
                continue
            out = with_extra(result.record, result.extra)
            if refund_state(out, self.refund_field, self.refund_values) is None:
                unknown_refunds += 1
                if unknown_refunds == 1:
                    first_unknown = field_of(out, self.refund_field)
                if not result.warnings:
                    warned += 1
            normalized.append([time_ext, out])
        self.stats.valid += len(normalized)
        self.stats.warnings += warned
        if unknown_refunds:
            by_rule[(self.refund_field, "refund_value_unknown")] += unknown_refunds  # the config names it
            log.warning(
                "filter %s: tag %s: %d records with %s %r, neither a refund value nor a non-refund one: "
                "passed on, never taken for a duplicate of the purchase; the mirrors refuse them",
                self.name,
                tag,
                unknown_refunds,
                self.refund_field,
                peer_text(first_unknown, 60),  # the sender's value: bounded in the log
            )
        if rejected:
            self.stats.invalid += len(rejected)
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
        kept = self._dedup(self.dedup, tag, normalized, [self._key(r) for _, r in normalized])
        kept.refused = rejected
        return kept

    def apply_batch(self, tag: str, entries: bytes, count: int) -> Filtered[bytes] | None:
        """The whole batch at once when every record is already canonical and valid
        (agent/hive/fast_path.py) and none is a duplicate; None sends it the per-record way,
        which also drops and counts the duplicates one by one."""
        done = fast_batch(entries, count, tag)
        if done is None:
            return None
        encoded, keys = done
        on_durable = None
        if self.dedup is not None:
            usable = [k for k in keys if k is not None]
            if _taken(self.dedup, usable) or len(set(usable)) != len(usable):
                return None
            on_durable = _reserved(self.dedup, usable)
        self.stats.valid += count
        return Filtered(encoded, count, on_durable)

    def _key(self, record: dict[str, Any]) -> Key | None:
        """(app_id, transaction_id, refund), or None when the record has no usable key."""
        app, txn = record.get("app_id"), record.get("transaction_id")
        if not (isinstance(app, str) and isinstance(txn, str) and txn):
            return None  # lenient mode keeps such a record: it is not anybody's duplicate
        refund = refund_state(record, self.refund_field, self.refund_values)
        if refund is None:
            return None  # neither a refund nor a purchase: nobody's duplicate
        return app, txn, refund

    def _dedup(self, dedup: DedupStore, tag: str, entries: list[Any], keys: list[Key | None]) -> Filtered[list[Any]]:
        """The entries that are nobody's duplicate; their keys stay reserved until the
        ingest step says whether the entries reached the journal."""
        usable = [k for k in keys if k is not None]
        taken = _taken(dedup, usable)
        if not taken and len(set(usable)) == len(usable):
            kept, reserved = entries, usable  # the usual batch: every purchase new, in C set operations
        else:
            kept, reserved = [], []
            for entry, key in zip(entries, keys):
                if key is not None:
                    if key in taken:
                        self.stats.duplicates += 1
                        self._count_duplicate(tag, entry[1])
                        continue
                    taken.add(key)  # a second copy in the same batch is a duplicate too
                    reserved.append(key)
                kept.append(entry)
        if len(kept) < len(entries):
            log.info(
                "filter %s: tag %s: %d duplicate purchases dropped (transaction_id seen within the window)",
                self.name,
                tag,
                len(entries) - len(kept),
            )
        return Filtered(kept, on_durable=_reserved(dedup, reserved))

    def _count_duplicate(self, tag: str, record: Any) -> None:
        by_time = self.stats.duplicates_by_time
        if len(by_time) < 100_000:  # bounded until the ledger takes them (every second)
            get = record.get if isinstance(record, dict) else lambda name: getattr(record, name, None)
            when, tz = get("purchase_time"), get("timezone")
            by_time[(tag, when if isinstance(when, str) else None, tz if isinstance(tz, str) else None)] += 1


def _taken(dedup: DedupStore, keys: list[Key]) -> set[Key]:
    """The keys that are already somebody's: in flight (before the store: a key leaves pending
    once stored) or delivered within the window."""
    in_flight = dedup.pending.intersection(keys)  # first: the writer thread moves a key out once stored
    return in_flight | dedup.committed(keys)


def _reserved(dedup: DedupStore, keys: list[Key]) -> Callable[[bool], None] | None:
    """Reserve the keys until the ingest step says whether their entries reached the journal:
    then they are stored, or released. None when there is nothing to reserve."""
    if not keys:
        return None
    dedup.reserve(keys)

    def on_durable(durable: bool) -> None:
        if durable:
            dedup.commit_soon(keys)
        else:
            dedup.release(keys)

    return on_durable


def _field_label(name: str) -> str:
    """The ``field`` label of hive_agent_invalid_events_total: the spec's name for the field, or
    ``other``. Never the sender's own spelling: senders would choose the label values, and every
    new one a series of its own (100,000 spellings made a 29 MB /metrics)."""
    return spec_name(name) or "other"


def build(cfg: HiveFilterConfig, data_dir: Path) -> HiveFilter:
    dedup = None
    if cfg.dedup_window > 0:
        dedup = DedupStore(Path(data_dir) / "state" / f"dedup-{file_name(cfg.name)}.sqlite", cfg.dedup_window)
    return HiveFilter(cfg, dedup)
