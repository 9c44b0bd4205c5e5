"""``type = "tail"``: follow JSON-lines files as Fluentd's in_tail does, without its known losses.

The package's rooms: config (the options), discovery (globs and inotify), fileset (the
followed files: scan, open, stat), followed (one open file), position (the position file and
its journal markers), checkpointer (durability: markers, checkpoints, the rewind after a
failed write), imported (positions from td-agent or Fluent Bit) and input (the loop).
"""

from agent.inputs.tail.config import TailInputConfig
from agent.inputs.tail.input import MAX_INFLIGHT, MIN_RESCAN_INTERVAL, TailInput, TailStats, build

__all__ = ["MAX_INFLIGHT", "MIN_RESCAN_INTERVAL", "TailInput", "TailInputConfig", "TailStats", "build"]
