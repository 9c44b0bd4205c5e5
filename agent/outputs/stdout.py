"""``type = "stdout"``: JSON lines on standard output (for a look, or a pipe)."""

from __future__ import annotations

import sys

from agent.component import Outcome, Output, TagBatch
from agent.event import LineRenderer


class StdoutOutput(Output):
    def __init__(self, name: str, stream=None):
        self.name = name
        self.stream = stream or sys.stdout.buffer
        self.renderer = LineRenderer()

    async def send(self, batches: list[TagBatch]) -> Outcome:
        try:
            for batch in batches:
                self.stream.write(self.renderer.render(batch))
            self.stream.flush()
        except BrokenPipeError:
            return Outcome.fatal("standard output is closed")
        except OSError as exc:
            return Outcome.retry(f"standard output: {exc.strerror}")
        return Outcome.ok()
