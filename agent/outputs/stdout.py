"""``type = "stdout"``: JSON lines on standard output (for a look, or a pipe)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO, Literal

from agent.component import Outcome, Output
from agent.config.types import KeyStyle, OutputConfigBase
from agent.hive.records import restyler
from agent.journal.batch import TagBatch
from agent.render import LineRenderer


class StdoutOutputConfig(OutputConfigBase, frozen=True, kw_only=True):
    type: Literal["stdout"]
    key_style: KeyStyle = "raw"

    @property
    def renders_hive_spec(self) -> bool:
        return self.key_style != "raw"  # snake or camel: the spec's fields alone


class StdoutOutput(Output):
    def __init__(self, name: str, stream: IO[bytes] | None = None, key_style: str = "raw"):
        self.name = name
        self.key_style = key_style
        self.restyle = restyler(key_style)
        self.stream = stream or sys.stdout.buffer
        self.renderer = LineRenderer()

    async def send(self, batches: list[TagBatch]) -> Outcome:
        try:
            for batch in batches:
                self.stream.write(self.renderer.render(batch, self.restyle))
            self.stream.flush()
        except BrokenPipeError:
            return Outcome.fatal("standard output is closed")
        except OSError as exc:
            return Outcome.retry(f"standard output: {exc.strerror}")
        return Outcome.ok()


def build(cfg: StdoutOutputConfig, data_dir: Path) -> StdoutOutput:
    return StdoutOutput(cfg.name, key_style=cfg.key_style)
