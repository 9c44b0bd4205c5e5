"""Is the agent healthy? One rule, used by ``/health``, the exit code of ``hive-agent status`` and
the ``hive_agent_healthy`` gauge.

Unhealthy, each reason naming the component and what it waits on, when:

* an output with a backlog has delivered nothing for longer than ``[monitor] unhealthy_after``:
  its oldest unsent event is older than that, and so is its last success (or it never had one).
  One failed try is not a verdict: an output that retries and delivers again within the period
  stays healthy, as Fluent Bit's health check counts failures over ``HC_Period``;
* an output is paused (the destination refuses our credentials);
* a delivery process is down, or has not reported for ``SNAPSHOT_STALE`` seconds;
* a task the agent cannot run without has died;
* the journal is over ``JOURNAL_FULL_SHARE`` of ``max_bytes`` (at 100% inputs are held back),
  or cannot write.

Pure: the caller hands in what it knows (the delivery snapshot, the journal's figures, the
processes' and tasks' states) and the time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from agent.delivery.snapshot import OutputSnapshot

SNAPSHOT_STALE = 5.0  # seconds: an older delivery snapshot means the process is stuck or gone
JOURNAL_FULL_SHARE = 0.9


@dataclass(frozen=True, slots=True)
class JournalState:
    size_bytes: int
    max_bytes: int
    write_error: str | None


def reasons(
    *,
    now_ns: int,
    unhealthy_after: float,
    outputs: Mapping[str, OutputSnapshot],
    snapshot_at_ns: int | None,
    deliveries_down: Iterable[int],
    dead_tasks: Mapping[str, str],
    journal: JournalState,
) -> list[str]:
    """Why the agent is unhealthy; none when it is healthy."""
    found = [f"delivery process {group} is down" for group in deliveries_down]
    if snapshot_at_ns is not None and now_ns - snapshot_at_ns > SNAPSHOT_STALE * 1e9:
        found.append(f"the delivery process has not reported for more than {SNAPSHOT_STALE:.0f}s")
    for name, out in outputs.items():
        why = out.last_error or "nothing said"
        if out.paused:
            found.append(f"output {name} is paused (the destination refuses our credentials): {why}")
            continue
        oldest = out.oldest_pending_ns
        if oldest is None:
            continue  # no backlog: nothing waits on it
        waited = (now_ns - oldest) / 1e9
        success = out.last_success_ns
        since_success = (now_ns - success) / 1e9 if success is not None else None
        if waited > unhealthy_after and (since_success is None or since_success > unhealthy_after):
            delivered = "never delivered" if since_success is None else f"delivered nothing for {since_success:.0f}s"
            found.append(
                f"output {name} has {delivered}; its oldest unsent event is {waited:.0f}s old "
                f"(unhealthy_after {unhealthy_after:g}s); waiting on: {why}"
            )
    for task, death in dead_tasks.items():
        found.append(f"task {task} died: {death}")
    if journal.write_error is not None:
        found.append(f"journal: {journal.write_error}")
    if journal.max_bytes and journal.size_bytes >= journal.max_bytes:
        found.append("the journal is full: inputs are held back")
    elif journal.max_bytes and journal.size_bytes > JOURNAL_FULL_SHARE * journal.max_bytes:
        found.append(
            f"the journal is {journal.size_bytes / journal.max_bytes:.0%} full "
            f"({journal.size_bytes} of max_bytes {journal.max_bytes}): inputs are held back at 100%"
        )
    return found
