"""``[[inputs]] type = "tail"``: the tail input's settings, checked before anything starts."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import msgspec

from agent.config.types import Duration, InputConfigBase, Interval, Size

_TAG_FIELD = re.compile(r"\{(\w+)\}")


class TailInputConfig(InputConfigBase, frozen=True, kw_only=True):
    """Fluentd's in_tail, for JSON-lines files. Defaults follow Fluentd, except
    ``max_line_size`` (bounded here) and the position file (always kept)."""

    type: Literal["tail"]
    path: list[str]  # one pattern or a list of them
    exclude_path: list[str] = msgspec.field(default_factory=list)
    tag: str
    # Named groups taken from the path fill {name} in tag, as Fluent Bit's Tag_Regex does.
    tag_regex: str | None = None
    read_from_head: bool = False
    follow_inodes: bool = False
    rotate_wait: Duration = 5.0
    refresh_interval: Interval = 60.0
    # Every watched file is stat'ed this often. inotify reports changes at once; this is the safety
    # net for what it misses (network file systems, a full event queue). Fluentd's watch timer is 1s;
    # 3s keeps a thousand idle files under 1% of a core.
    stat_interval: Interval = 3.0
    max_line_size: Size = 1024 * 1024
    read_bytes_limit: Size = 256 * 1024  # parsed a read at a time; 1MiB reads measured no faster
    path_key: str | None = None
    pos_file: Path | None = None  # default: <data_dir>/tail/<name>.pos.json
    # Switching a host: where td-agent (Fluentd) or Fluent Bit had read each file to, taken at the
    # first start only (agent/inputs/tail/imported.py).
    import_pos_file: Path | None = None
    import_fluentbit_db: Path | None = None

    @classmethod
    def prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        data = super().prepare(data)
        for key in ("path", "exclude_path"):
            if isinstance(data.get(key), str):
                data = {**data, key: [data[key]]}
        return data

    def describe(self) -> str:
        regex = f" (tag_regex {self.tag_regex})" if self.tag_regex else ""
        return f"tail {' '.join(self.path)} tag {self.tag}{regex}"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.path:
            raise ValueError("path: at least one path pattern is needed")
        for p in self.path:
            if not os.path.isabs(p):
                raise ValueError(f"path: {p!r}: path patterns must be absolute")
        fields = set(_TAG_FIELD.findall(self.tag))
        groups: set[str] = set()
        if self.tag_regex is not None:
            try:
                groups = set(re.compile(self.tag_regex).groupindex)
            except re.error as exc:
                raise ValueError(f"tag_regex: {exc}") from None
        missing = fields - groups
        if missing:
            raise ValueError(
                f"tag {self.tag!r} uses {{{', '.join(sorted(missing))}}} but tag_regex has no such named group"
            )
        if self.max_line_size < 16 or self.read_bytes_limit < 4096:
            raise ValueError("max_line_size must be at least 16 bytes and read_bytes_limit at least 4KiB")
