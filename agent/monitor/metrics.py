"""What /metrics shows: the components' readings in the families agent/component.py names
(``Metric``), the outputs' figures from the delivery processes' snapshots, the journal, the
health, the reloads and the delivery processes.

The families and their labels (agent.component.Metric holds the components' own):

  hive_agent_component_received_events_total{component,kind,type}
  hive_agent_component_received_bytes_total{component,kind,type}
  hive_agent_component_sent_events_total{component,kind,type}
  hive_agent_component_retries_total{component,kind,type}
  hive_agent_component_dead_lettered_events_total{component,kind,type}
  hive_agent_component_discarded_events_total{component,kind,type,reason}
  hive_agent_component_errors_total{component,kind,type,reason}
  hive_agent_invalid_events_total{component,field,rule}
  hive_agent_dedup_hits_total{component}
  hive_agent_normalization_warnings_total{component}
  hive_agent_journal_bytes, hive_agent_journal_segments, hive_agent_journal_max_bytes
  hive_agent_journal_cut_bytes_total, hive_agent_journal_quarantined_bytes_total,
  hive_agent_journal_damaged_regions_total
  hive_agent_output_pending_bytes{component}
  hive_agent_output_oldest_unsent_age_seconds{component}
  hive_agent_output_retrying{component}, hive_agent_output_paused{component}
  hive_agent_delivery_process_up{group}, hive_agent_healthy
  hive_agent_reloads_total{result}, hive_agent_last_reload_timestamp_seconds
  hive_agent_tail_files{component}, hive_agent_tail_rotations_total{component},
  hive_agent_tail_truncations_total{component}, hive_agent_tail_invalid_utf8_lines_total{component},
  hive_agent_tail_scans_total{component}, hive_agent_forward_auth_failures_total{component}
  hive_agent_mirror_events_total{component, what}
  hive_agent_ledger_purchases_total{output,game,state}, hive_agent_ledger_revenue_total{output,game,state,currency}
"""

from __future__ import annotations

import collections
import sqlite3
import time
from collections.abc import Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import tasks
from agent.component import Metric, Reading
from agent.config.document import AgentConfig
from agent.ledger.store import with_ledger
from agent.monitor import exposition
from agent.monitor.exposition import Family

if TYPE_CHECKING:
    from agent.monitor.server import Monitor

_PER_COMPONENT = ("component", "kind", "type")


def component_families() -> dict[Metric, Family]:
    """A fresh family for every Metric, labelled by the component (its name, kind and type, or
    its name alone), then by the family's own labels."""
    families = {}
    for m in Metric:
        component = ("component",) if m.by_name else _PER_COMPONENT
        make = exposition.counter if m.kind == "counter" else exposition.gauge
        families[m] = make(m.metric, m.help, labels=[*component, *m.labels])
    return families


def _add_readings(families: dict[Metric, Family], component: list[str], readings: Iterable[Reading]) -> None:
    for r in readings:
        own = component[:1] if r.family.by_name else component
        families[r.family].add_metric([*own, *r.labels], r.value)


def components_by_kind(cfg: AgentConfig) -> list[tuple[str, list[Any]]]:
    return [("input", cfg.inputs), ("filter", cfg.filters), ("output", cfg.outputs)]


class AgentMetrics:
    """Every family /metrics shows, built afresh from the components' readings."""

    def __init__(self, monitor: Monitor):
        self.monitor = monitor

    def __iter__(self) -> Iterator[Family]:
        app = self.monitor.app
        families = component_families()
        for inp in app.inputs:
            component = [inp.name, "input", inp.cfg.type]
            events, size = inp.received()
            families[Metric.RECEIVED].add_metric(component, events)
            families[Metric.RECEIVED_BYTES].add_metric(component, size)
            _add_readings(families, component, inp.readings())
        for f_cfg, f in zip(app.cfg.filters, app.ingest.filters):
            _add_readings(families, [f_cfg.name, "filter", f_cfg.type], f.readings())
        sent, retries, dead = (families[m] for m in (Metric.SENT, Metric.RETRIES, Metric.DEAD_LETTERED))
        snap = self.monitor.delivery()
        pending = exposition.gauge(
            "hive_agent_output_pending_bytes", "Journal bytes not yet delivered", labels=["component"]
        )
        age = exposition.gauge(
            "hive_agent_output_oldest_unsent_age_seconds",
            "Age of the oldest record not yet delivered",
            labels=["component"],
        )
        retrying = exposition.gauge("hive_agent_output_retrying", "1 while the output retries", labels=["component"])
        paused = exposition.gauge("hive_agent_output_paused", "1 while the output is paused", labels=["component"])
        mirror = exposition.counter(
            "hive_agent_mirror_events",
            "Vendor mirrors: requests, accepted, duplicates skipped, test purchases "
            "skipped, apps not configured, identities learned, refused, late (AppsFlyer), unsupported_currency "
            "(Naver)",
            labels=["component", "what"],
        )
        now = time.time_ns()
        for o_cfg in app.cfg.outputs:
            out = self.monitor.output_state(o_cfg.name, snap)
            lv = [o_cfg.name, "output", o_cfg.type]
            sent.add_metric(lv, out.sent_records)
            retries.add_metric(lv, out.retries)
            dead.add_metric(lv, out.dead_lettered)
            if out.refunds_skipped:
                families[Metric.DISCARDED].add_metric([*lv, "refund"], out.refunds_skipped)
            pending.add_metric([o_cfg.name], self.monitor.pending_bytes(o_cfg.name, out.position))
            oldest = out.oldest_pending_ns
            age.add_metric([o_cfg.name], max(0.0, (now - oldest) / 1e9) if oldest else 0.0)
            retrying.add_metric([o_cfg.name], 1 if out.retrying else 0)
            paused.add_metric([o_cfg.name], 1 if out.paused else 0)
            for what, n in out.output_stats.items():  # the vendor mirrors' counters
                mirror.add_metric([o_cfg.name, what], n)
        # Background tasks that died (agent/tasks.py), this process's and the delivery processes'.
        kinds = {c.name: (kind, c.type) for kind, items in components_by_kind(app.cfg) for c in items}
        died: dict[str, int] = dict(tasks.deaths())
        for owner, n in (snap.task_deaths if snap is not None else {}).items():
            died[owner] = died.get(owner, 0) + n
        for owner, n in died.items():
            kind, type_ = kinds.get(owner, ("agent", owner))
            families[Metric.ERRORS].add_metric([owner, kind, type_, "task"], n)
        journal = app.journal
        yield from families.values()
        yield from (pending, age, retrying, paused, mirror)
        yield exposition.gauge("hive_agent_journal_bytes", "Bytes in journal segments", value=journal.size_bytes)
        yield exposition.gauge("hive_agent_journal_segments", "Journal segments", value=len(journal.segments()))
        yield exposition.gauge("hive_agent_journal_max_bytes", "The journal's size limit", value=journal.max_bytes)
        yield exposition.counter(
            "hive_agent_journal_cut_bytes", "Torn bytes cut off at recovery", value=journal.stats.cut_bytes
        )
        yield exposition.counter(
            "hive_agent_journal_quarantined_bytes",
            "Damaged journal bytes set aside in data_dir/quarantine at recovery",
            value=journal.stats.quarantined_bytes,
        )
        yield exposition.counter(
            "hive_agent_journal_damaged_regions",
            "Damaged places in journal segments, each skipped to the next whole record",
            value=journal.stats.damaged_regions,
        )
        ok, _ = self.monitor.health_of(snap)
        yield exposition.gauge(
            "hive_agent_healthy",
            "1 while /health answers 200 (the reasons are in /health and /api/status.json)",
            value=1 if ok else 0,
        )
        reloads = exposition.counter(
            "hive_agent_reloads", "Config reloads by result (ok, refused, failed)", labels=["result"]
        )
        rs = app.reloader.stats
        for result, n in (("ok", rs.succeeded), ("refused", rs.refused), ("failed", rs.failed)):
            reloads.add_metric([result], n)
        yield reloads
        yield exposition.gauge(
            "hive_agent_last_reload_timestamp_seconds",
            "When the last reload was asked (0: never)",
            value=rs.last_at or 0,
        )
        up = exposition.gauge("hive_agent_delivery_process_up", "1 while the delivery process runs", labels=["group"])
        for delivery in app.deliveries:
            up.add_metric([str(delivery.group)], 1 if delivery.running else 0)
        yield up
        if app.cfg.agent.ledger:
            yield from _ledger_families(app.paths.ledger)


def _ledger_families(path: Path) -> Iterator[Family]:
    """The ledger's totals over every day it counted (agent/ledger/store.py): they survive restarts."""
    labels = ["output", "game", "state"]
    purchases = exposition.counter(
        "hive_agent_ledger_purchases", "Purchases by output, game and state (in, delivered, refused, skipped)", labels
    )
    revenue = exposition.counter(
        "hive_agent_ledger_revenue", "Revenue of those purchases, by currency (refunds negative)", [*labels, "currency"]
    )
    try:
        rows = with_ledger(
            path, lambda db: db.execute("SELECT game, output, state, currency, n, amount FROM totals").fetchall()
        )
    except sqlite3.Error:
        rows = []  # not created yet, or busy past its timeout: the next scrape has them
    counts: collections.Counter[tuple[str, str, str]] = collections.Counter()
    for game, output, state, currency, n, amount in rows:
        counts[(output, game, state)] += n
        revenue.add_metric([output, game, state, currency], float(Decimal(amount)))
    for key, n in counts.items():
        purchases.add_metric(list(key), n)
    yield purchases
    yield revenue
