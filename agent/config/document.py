"""The configuration document: TOML validated by msgspec, unknown keys rejected.

Everything is checked before anything starts (``hive-agent check`` runs the
same code). The ``[agent]`` and ``[monitor]`` sections are here; each
``[[inputs]]``, ``[[filters]]`` and ``[[outputs]]`` entry is validated by its
component's own model, found by its ``type`` in agent/registry.py. The value
types they share (durations, sizes, secrets, names, URLs) are in
agent/config/types.py.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from agent.config.types import (
    ComponentConfig,
    Duration,
    FilterConfigBase,
    InputConfigBase,
    Interval,
    OutputConfigBase,
    Size,
    Strict,
    at_least,
)
from agent.errors import ConfigError
from agent.ledger.tally import parse_offset
from agent.registry import FILTERS, INPUTS, OUTPUTS

# -- [agent] -----------------------------------------------------------------


class JournalSettings(Strict, frozen=True, kw_only=True):
    fsync: Literal["always", "interval", "off"] = "always"
    fsync_interval: Interval = 1.0  # fsyncs below 10ms apart: use "always"
    segment_bytes: Size = 64 * 1024 * 1024
    max_bytes: Size = 2 * 1024 * 1024 * 1024

    def __post_init__(self) -> None:
        at_least(self, fsync_interval=0.01)
        if self.segment_bytes < 4096:
            raise ValueError("segment_bytes must be at least 4KiB")
        if self.max_bytes < self.segment_bytes:
            raise ValueError("max_bytes must be at least segment_bytes")


class AgentSettings(Strict, frozen=True, kw_only=True):
    data_dir: Path = Path("var")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    shutdown_timeout: Interval = 30.0
    journal: JournalSettings = msgspec.field(default_factory=JournalSettings)
    # Outputs run in this many delivery processes (output i in process i mod n): one core each.
    delivery_processes: Annotated[int, Meta(ge=1, le=16)] = 1
    # The ledger of purchases by day, game and output (agent/ledger/): its days are those of this
    # UTC offset (Hive reports in KST), and days older than the retention are swept.
    ledger: bool = True
    ledger_timezone: str = "+09:00"
    ledger_retention: Duration = 400 * 86400.0

    def __post_init__(self) -> None:
        parse_offset(self.ledger_timezone)
        _usable_data_dir(self.data_dir)


def _usable_data_dir(value: Path) -> None:
    """A directory the agent can write in, or one it can create: said now, not as a traceback later."""
    probe = value
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ValueError(f"data_dir: {probe} is not a directory")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"data_dir: {probe} is not writable by this user")


class MonitorSettings(Strict, frozen=True, kw_only=True):
    """/metrics, /api/plugins.json and /health over HTTP (absent section: no monitor)."""

    bind: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 24220
    # An output with a backlog that has delivered nothing for this long makes /health 503
    # (agent/health.py): judged by its oldest unsent event and its last success, not one try.
    unhealthy_after: Interval = 60.0


class AgentConfig(Strict, frozen=True, kw_only=True):
    agent: AgentSettings = msgspec.field(default_factory=AgentSettings)
    monitor: MonitorSettings | None = None
    inputs: list[InputConfigBase] = msgspec.field(default_factory=list)
    filters: list[FilterConfigBase] = msgspec.field(default_factory=list)
    outputs: list[OutputConfigBase] = msgspec.field(default_factory=list)

    def delivery_group(self, group: int) -> list[OutputConfigBase]:
        """The outputs delivery process ``group`` runs."""
        n = self.agent.delivery_processes
        return [o for i, o in enumerate(self.outputs) if i % n == group]

    @classmethod
    def validate(cls, data: Any) -> AgentConfig:
        """The whole document, every error found at once: ConfigInvalid lists them by key."""
        return _document(data)

    def __post_init__(self) -> None:
        seen: set[str] = set()
        kinds: tuple[tuple[str, list[ComponentConfig]], ...] = (
            ("inputs", list(self.inputs)),
            ("filters", list(self.filters)),
            ("outputs", list(self.outputs)),
        )
        for kind, items in kinds:
            for i, item in enumerate(items):
                if item.name in seen:
                    raise ValueError(f"{kind}[{i}]: name {item.name!r} is used twice")
                seen.add(item.name)
        addresses: set[tuple[str, int]] = set()
        for inp in self.inputs:
            address = inp.listens_on()
            if address is not None:
                if address in addresses:
                    raise ValueError(f"two inputs listen on {address[0]}:{address[1]}")
                addresses.add(address)
        if not self.inputs:
            raise ValueError("at least one [[inputs]] is needed")
        if not self.outputs:
            raise ValueError("at least one [[outputs]] is needed (events are journaled for the outputs)")


class ConfigInvalid(ValueError):
    """What is wrong with a document: (where, why) for each error found."""

    def __init__(self, errors: list[tuple[str, str]]):
        super().__init__("; ".join(f"{where or '(top level)'}: {why}" for where, why in errors))
        self.errors = errors


_AT = re.compile(r"^(.*?)(?: - at `\$(.*)`)?$", re.S)
_UNKNOWN = re.compile(r"^Object contains unknown field `(.*)`$", re.S)
_MISSING = re.compile(r"^Object missing required field `(.*)`$", re.S)
_OF_KEY = re.compile(r"^([A-Za-z_]\w*): (.*)$", re.S)  # a model's check about one of its keys


def _located(where: str, exc: msgspec.ValidationError) -> tuple[str, str]:
    """msgspec's "Expected `int`, got `str` - at `$.users[0].name`" as ("inputs.0.users.0.name", "…")."""
    m = _AT.match(str(exc))
    assert m is not None  # the pattern matches any text
    why, path = m.group(1), m.group(2) or ""
    keys = [where] if where else []
    keys += [k for k in re.split(r"[.\[\]]+", path) if k and k != "..."]
    for pattern, said in ((_UNKNOWN, "unknown key"), (_MISSING, "Field required")):
        found = pattern.match(why)
        if found:
            keys.append(found.group(1))
            why = said
    of_key = _OF_KEY.match(why)
    if of_key:
        keys.append(of_key.group(1))
        why = of_key.group(2)
    return ".".join(keys), why


def _document(raw: Any) -> AgentConfig:
    """Each section by its model and each component by its type's, so that every error is said
    at once, by the key a user wrote (``inputs.0.port``)."""
    if not isinstance(raw, dict):
        raise ConfigInvalid([("", "a document is a table")])
    errors: list[tuple[str, str]] = []
    for key in raw.keys() - {"agent", "monitor", "inputs", "filters", "outputs"}:
        errors.append((key, "unknown key"))
    sections: dict[str, Any] = {}
    for key, model in (("agent", AgentSettings), ("monitor", MonitorSettings)):
        if key in raw:
            try:
                sections[key] = model.validate(raw[key])
            except (msgspec.ValidationError, ValueError) as exc:
                errors.append(_located(key, exc) if isinstance(exc, msgspec.ValidationError) else (key, str(exc)))
    for kind, registered in (("inputs", INPUTS), ("filters", FILTERS), ("outputs", OUTPUTS)):
        items = raw.get(kind, [])
        if not isinstance(items, list):
            errors.append((kind, f"expected a list of [[{kind}]] tables"))
            continue
        built = []
        for i, item in enumerate(items):
            where = f"{kind}.{i}"
            if not isinstance(item, dict):
                errors.append((where, "expected a table"))
                continue
            type_name = item.get("type")
            kind_of = registered.get(type_name) if isinstance(type_name, str) else None
            if kind_of is None:
                names = ", ".join(repr(t) for t in registered)
                errors.append((f"{where}.type", f"{item.get('type')!r} is not one of {names}"))
                continue
            if item.get("name") is None:  # a component without a name is <type>.<index> (forward.0)
                item = {**item, "name": f"{item['type']}.{i}"}
            try:
                built.append(kind_of.config.validate(item))
            except msgspec.ValidationError as exc:
                errors.append(_located(where, exc))
        sections[kind] = built
    if errors:
        raise ConfigInvalid(errors)
    try:
        return AgentConfig(**sections)
    except ValueError as exc:
        raise ConfigInvalid([("", str(exc))]) from None


def _format_error(path: Path, exc: ConfigInvalid) -> str:
    return "\n".join(f"{path}: {where or '(top level)'}: {why}" for where, why in exc.errors)


MAX_CONFIG_BYTES = 1 << 20  # a config file is a few KB; more is a mistake (or /dev/zero)


def read_config_text(path: str | os.PathLike) -> str:
    """The config file's text, bounded: what both processes load, once read."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None


def load_config_text(text: str, origin: str | os.PathLike) -> AgentConfig:
    """``text`` validated whole; ``origin`` (the file it came from) names it in errors."""
    origin = Path(origin)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML: {exc}") from None
    try:
        return AgentConfig.validate(raw)
    except ConfigInvalid as exc:
        raise ConfigError(_format_error(origin, exc)) from None


def load_config(path: str | os.PathLike) -> AgentConfig:
    return load_config_text(read_config_text(path), path)
