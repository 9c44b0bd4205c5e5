"""The filter registry: config type → builder. Filters run in the ingest step (agent/ingest.py)."""

from __future__ import annotations

from pathlib import Path

from agent.component import Filter
from agent.paths import file_name


def _record_transformer(cfg, data_dir: Path) -> Filter:
    from agent.filters.record_transformer import RecordTransformer

    return RecordTransformer(cfg)


def _hive(cfg, data_dir: Path) -> Filter:
    from agent.filters.dedup import DedupStore
    from agent.filters.hive import HiveFilter

    dedup = None
    if cfg.dedup_window > 0:
        dedup = DedupStore(Path(data_dir) / "state" / f"dedup-{file_name(cfg.name)}.sqlite", cfg.dedup_window)
    return HiveFilter(cfg, dedup)


BUILDERS = {"record_transformer": _record_transformer, "hive": _hive}


def build_filters(configs, data_dir: Path) -> list[tuple[str, Filter]]:
    """(match pattern, filter) for each filter of the config, in order."""
    return [(c.match, BUILDERS[c.type](c, data_dir)) for c in configs]
