"""Reload: the config file read again and applied to the running agent, with no gap.

Asked by SIGHUP, ``hive-agent reload`` or ``POST /api/reload`` on the control socket. The
new file is validated whole first; a file that does not validate, or that changes what
only a restart can change (the ``[agent]`` and ``[monitor]`` sections: the data_dir, the
journal, the number of delivery processes, the monitor's port), is refused with one
ERROR line naming the key, and the running config stays.

Then, by component name, comparing the validated configs:
- inputs and filters whose config did not change keep running untouched (a Forward input
  its listening sockets and every open connection, a tail input its files and positions);
  removed ones are stopped and drained as at shutdown; changed ones are stopped, then
  built and started again (a tail input resumes from its position file); new ones start.
- outputs live in the delivery processes, which apply the same rule in two steps
  (agent/delivery/group.py): every process first stops the outputs that change or move,
  then every process starts the new ones. A removed output first delivers what the journal
  holds for it, for up to ``shutdown_timeout``, as at shutdown. A delivery process that does
  not answer in time is restarted on the new config: the batch it held is read again from its
  output's cursor — a duplicate at worst, never a loss.
- an output keeps its cursor by name; a removed output no longer holds journal segments
  (its cursor file stays). A new output with no cursor starts at the journal's end as of the
  reload, unless it says ``reload_start_at = "oldest"``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from agent import secrets
from agent.component import Filter, Input
from agent.config.document import AgentConfig, load_config_text, read_config_text
from agent.config.types import Strict, field_names
from agent.delivery.channel import APPLIED, APPLY, PREPARE, STOPPED
from agent.errors import ConfigError
from agent.registry import FILTERS, INPUTS
from agent.secrets import scrub

if TYPE_CHECKING:
    from agent.app import App

log = logging.getLogger("agent")


@dataclass(slots=True)
class ReloadStats:
    succeeded: int = 0
    refused: int = 0  # the file did not validate, or asked for a restart
    failed: int = 0  # validated, but a component could not start
    last_at: float | None = None  # wall clock
    last_result: str = ""  # "ok", "refused", "failed"
    last_error: str = ""


@dataclass(slots=True)
class ReloadResult:
    result: str  # "ok", "refused", "failed"
    errors: list[str]
    changed: dict[str, list[str]]  # "added", "removed", "changed", "kept": component names

    def to_json(self) -> dict[str, Any]:
        # An error may quote what a component said of its config: shown without its secrets.
        return {"result": self.result, "errors": [scrub(e) for e in self.errors], **self.changed}


@dataclass(slots=True)
class _Filters:
    """A reload's filters: the list to run, the new ones with the running ones they replace, the removed."""

    filters: list[tuple[str, Filter]] = field(default_factory=list)
    built: list[tuple[Filter, Filter | None]] = field(default_factory=list)
    gone: list[Filter] = field(default_factory=list)


def restart_only(old: AgentConfig, new: AgentConfig) -> str | None:
    """The first key of [agent] or [monitor] that differs: those need a restart."""
    for section in ("agent", "monitor"):
        key = _first_difference(getattr(old, section), getattr(new, section), section)
        if key is not None:
            return key
    return None


def _first_difference(old: Any, new: Any, where: str) -> str | None:
    if old == new:
        return None
    if isinstance(old, Strict) and isinstance(new, Strict) and type(old) is type(new):
        for name in field_names(old):
            key = _first_difference(getattr(old, name), getattr(new, name), f"{where}.{name}")
            if key is not None:
                return key
    return where


def _by_name(items: list[Any]) -> dict[str, Any]:
    return {item.name: item for item in items}


class Reloader:
    def __init__(self, app: App):
        self.app = app
        self.stats = ReloadStats()
        self.lock = asyncio.Lock()  # one reload at a time (a SIGHUP during one waits its turn); shutdown waits too

    async def reload(self) -> ReloadResult:
        async with self.lock:
            result = await self._reload()
        s = self.stats
        s.last_at, s.last_result, s.last_error = time.time(), result.result, "; ".join(result.errors)[:500]
        if result.result == "ok":
            s.succeeded += 1
        elif result.result == "refused":
            s.refused += 1
        else:
            s.failed += 1
        return result

    async def _reload(self) -> ReloadResult:
        app = self.app
        path = app.config_path
        try:
            text = read_config_text(path)
            new = load_config_text(text, path)
        except ConfigError as exc:
            first = str(exc).splitlines()[0]
            log.error("reload refused, the running config stays: %s", first)
            return ReloadResult("refused", str(exc).splitlines(), {})
        key = restart_only(app.cfg, new)
        if key is not None:
            log.error("reload refused, the running config stays: %s: %s cannot change without a restart", path, key)
            return ReloadResult("refused", [f"{key} cannot change without a restart"], {})
        secrets.install(new)  # before anything of the new config can log
        try:
            filters = self._build_filters(new)
        except Exception as exc:
            log.error("reload failed, the running config stays: a filter cannot be built: %s", exc)
            return ReloadResult("failed", [scrub(f"filters: cannot build: {exc}")], {})
        old = app.cfg
        changed = {
            "added": [c.name for kind in ("inputs", "filters", "outputs") for c in _added(old, new, kind)],
            "removed": [c.name for kind in ("inputs", "filters", "outputs") for c in _added(new, old, kind)],
            "changed": [c.name for kind in ("inputs", "filters", "outputs") for c in _changed(old, new, kind)],
        }
        errors: list[str] = []
        deliveries = app.deliveries
        for delivery in deliveries:  # in order: a restart waits, and so does a second reload
            await delivery.lock.acquire()
        try:
            end = app.journal.end_position
            asked = orjson.dumps({"config": text, "origin": str(path), "end": [end.segment, end.offset]})
            # A removed output drains for up to shutdown_timeout; a send in flight then finishes.
            timeout = new.agent.shutdown_timeout + 30.0
            stopped = await asyncio.gather(*(d.ask(PREPARE, asked, timeout) for d in deliveries))
            self._install_filters(filters)
            app.cfg = new
            try:  # whatever happens here, the delivery processes are told to APPLY below
                errors += await self._swap_inputs(old, new)
            except Exception as exc:
                log.exception("reload: changing the inputs failed")
                errors.append(f"inputs: {exc}")
            app.replays.outputs = {o.name for o in new.outputs}
            app.replays.filters_names = {f.name for f in new.filters}
            for delivery, answer in zip(deliveries, stopped):
                delivery.config_text = text  # what it runs if it is started again
                if answer is None or answer[0] != STOPPED:
                    if delivery.running:
                        log.error("delivery process %s did not take the reload in time: restarting it", delivery.group)
                        delivery.restart()
                    continue
                applied = await delivery.ask(APPLY, b"", timeout)
                if applied is None or applied[0] != APPLIED:
                    log.error("delivery process %s did not start its new outputs: restarting it", delivery.group)
                    delivery.restart()
                    continue
                errors += orjson.loads(applied[1]).get("errors", [])
        finally:
            for delivery in deliveries:
                delivery.lock.release()
        kept = [c.name for kind in ("inputs", "filters", "outputs") for c in getattr(new, kind)]
        changed["kept"] = [n for n in kept if n not in changed["added"] and n not in changed["changed"]]
        if errors:
            log.error("reload applied with errors: %s", "; ".join(errors))
            return ReloadResult("failed", errors, changed)
        log.info(
            "reload applied: %d added, %d removed, %d changed, %d kept",
            *(len(changed[k]) for k in ("added", "removed", "changed", "kept")),
        )
        return ReloadResult("ok", [], changed)

    def _build_filters(self, new: AgentConfig) -> _Filters:
        """The new filter list, in config order, built before anything is stopped: a filter that
        cannot be built (its dedup store cannot open) fails the reload with nothing changed."""
        app = self.app
        running = {cfg.name: (cfg, f) for cfg, f in zip(app.cfg.filters, app.ingest.filters)}
        plan = _Filters()
        try:
            for f_cfg in new.filters:
                was = running.pop(f_cfg.name, None)
                if was is not None and was[0] == f_cfg:
                    plan.filters.append((f_cfg.match, was[1]))
                    continue
                built = FILTERS[f_cfg.type].build(f_cfg, app.paths.root)
                plan.built.append((built, was[1] if was is not None else None))
                plan.filters.append((f_cfg.match, built))
        except Exception:
            for built, _ in plan.built:
                built.close()
            raise
        plan.gone = [f for _, f in running.values()]
        return plan

    def _install_filters(self, plan: _Filters) -> None:
        for built, was in plan.built:
            if was is not None:
                built.carry_over(was)  # the same name: its dedup store and counters go on
        self.app.ingest.set_filters(plan.filters)
        for gone in plan.gone:
            gone.close()

    async def _swap_inputs(self, old: AgentConfig, new: AgentConfig) -> list[str]:
        """Removed and changed inputs stop first (a new one may listen where an old one did)."""
        app = self.app
        running = {inp.name: inp for inp in app.inputs}
        old_cfgs = _by_name(old.inputs)
        keep = {c.name for c in new.inputs if c.name in old_cfgs and old_cfgs[c.name] == c}
        timeout = new.agent.shutdown_timeout
        await asyncio.gather(*(inp.stop(timeout) for name, inp in running.items() if name not in keep))
        inputs: list[Input] = []
        errors = []
        for i_cfg in new.inputs:
            if i_cfg.name in keep:
                inputs.append(running[i_cfg.name])
                continue
            inp = INPUTS[i_cfg.type].build(i_cfg, app.ingest, app.paths.root)
            try:
                await inp.start()
            except (OSError, ConfigError) as exc:
                log.error("input %s: cannot start after the reload: %s", i_cfg.name, exc)
                errors.append(f"input {i_cfg.name}: cannot start: {exc}")
                continue
            inputs.append(inp)
        app.inputs = inputs
        return errors


def _added(old: AgentConfig, new: AgentConfig, kind: str) -> list[Any]:
    before = _by_name(getattr(old, kind))
    return [c for c in getattr(new, kind) if c.name not in before]


def _changed(old: AgentConfig, new: AgentConfig, kind: str) -> list[Any]:
    before = _by_name(getattr(old, kind))
    return [c for c in getattr(new, kind) if c.name in before and before[c.name] != c]
