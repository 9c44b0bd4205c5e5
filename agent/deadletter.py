"""The dead-letter store: what could not be delivered, with why, never dropped.

One JSON-lines file per output under ``<data_dir>/deadletter/``; each line
holds the output, the reason, the tag, the event time and the record, so a
person can read it and a replay can re-queue it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson

from agent.component import TagBatch
from agent.event import _json_default, rfc3339_ns


class DeadLetterStore:
    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def path(self, output_name: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in output_name)
        return self.directory / f"{safe}.jsonl"

    def write(self, output_name: str, reason: str, batches: list[TagBatch]) -> int:
        """Dead-letter whole batches that an output could not deliver, all for one reason."""
        return self.write_records(output_name, [(b.tag, t, r, reason) for b in batches for t, r in b.entries])

    def write_records(self, source: str, items: list[tuple[str, int, dict, str]]) -> int:
        """Dead-letter records one by one: (tag, time_ns, record, reason)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        at = rfc3339_ns(time.time_ns())
        lines = []
        for tag, time_ns, record, reason in items:
            lines.append(orjson.dumps({"output": source, "reason": reason, "at": at, "tag": tag,
                                       "time": rfc3339_ns(time_ns), "time_ns": time_ns, "record": record},
                                      default=_json_default, option=orjson.OPT_NON_STR_KEYS) + b"\n")
        fd = os.open(self.path(source), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, b"".join(lines))
            os.fsync(fd)
        finally:
            os.close(fd)
        return len(lines)
