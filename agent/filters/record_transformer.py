"""``type = "record_transformer"``: set fixed keys and remove keys (Fluentd's static subset)."""

from __future__ import annotations

from agent.component import Filter, Filtered


class RecordTransformer(Filter):
    def __init__(self, cfg):
        self.name = cfg.name
        self.record = dict(cfg.record)
        self.remove_keys = list(cfg.remove_keys)

    def apply(self, tag: str, entries: list) -> Filtered:
        for _time, r in entries:
            r.update(self.record)
            for k in self.remove_keys:
                r.pop(k, None)
        return Filtered(entries)
