"""``type = "record_transformer"``: set fixed keys and remove keys (Fluentd's static subset)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import msgspec

from agent.component import Filter, Filtered
from agent.config.types import FilterConfigBase


class RecordTransformerConfig(FilterConfigBase, frozen=True, kw_only=True):
    """Fluentd's record_transformer, the static part: set and remove keys."""

    type: Literal["record_transformer"]
    record: dict[str, Any] = msgspec.field(default_factory=dict)
    remove_keys: list[str] = msgspec.field(default_factory=list)


class RecordTransformer(Filter):
    def __init__(self, cfg: RecordTransformerConfig):
        self.name = cfg.name
        self.record = dict(cfg.record)
        self.remove_keys = list(cfg.remove_keys)

    def apply(self, tag: str, entries: list[Any]) -> Filtered[list[Any]]:
        for _time, r in entries:
            r.update(self.record)
            for k in self.remove_keys:
                r.pop(k, None)
        return Filtered(entries)


def build(cfg: RecordTransformerConfig, data_dir: Path) -> RecordTransformer:
    return RecordTransformer(cfg)
