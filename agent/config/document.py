"""The configuration document: TOML validated by pydantic, unknown keys rejected.

Everything is checked before anything starts (``hive-agent check`` runs the
same code). The ``[agent]`` and ``[monitor]`` sections are here; each
``[[inputs]]``, ``[[filters]]`` and ``[[outputs]]`` entry is validated by its
component's own model, found by its ``type`` in agent/registry.py. The value
types they share (durations, sizes, secrets, names, URLs) are in
agent/config/types.py.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import Field, ValidationError, field_validator, model_validator

from agent.config.types import (
    ComponentConfig,
    Duration,
    FilterConfigBase,
    InputConfigBase,
    Interval,
    OutputConfigBase,
    Size,
    Strict,
)
from agent.errors import ConfigError
from agent.ledger.tally import parse_offset
from agent.registry import FILTERS, INPUTS, OUTPUTS, Registered

# -- [agent] -----------------------------------------------------------------


class JournalSettings(Strict):
    fsync: Literal["always", "interval", "off"] = "always"
    fsync_interval: Annotated[Interval, Field(ge=0.01)] = 1.0  # fsyncs below 10ms apart: use "always"
    segment_bytes: Size = 64 * 1024 * 1024
    max_bytes: Size = 2 * 1024 * 1024 * 1024

    @model_validator(mode="after")
    def _limits(self) -> JournalSettings:
        if self.segment_bytes < 4096:
            raise ValueError("segment_bytes must be at least 4KiB")
        if self.max_bytes < self.segment_bytes:
            raise ValueError("max_bytes must be at least segment_bytes")
        return self


class AgentSettings(Strict):
    data_dir: Path = Path("var")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    shutdown_timeout: Interval = 30.0
    journal: JournalSettings = Field(default_factory=JournalSettings)
    # Outputs run in this many delivery processes (output i in process i mod n): one core each.
    delivery_processes: int = Field(1, ge=1, le=16)
    # The ledger of purchases by day, game and output (agent/ledger/): its days are those of this
    # UTC offset (Hive reports in KST), and days older than the retention are swept.
    ledger: bool = True
    ledger_timezone: str = "+09:00"
    ledger_retention: Duration = 400 * 86400.0

    @field_validator("ledger_timezone")
    @classmethod
    def _offset(cls, value: str) -> str:
        parse_offset(value)
        return value

    @field_validator("data_dir")
    @classmethod
    def _usable_data_dir(cls, value: Path) -> Path:
        """A directory the agent can write in, or one it can create: said now, not as a traceback later."""
        probe = value
        while not probe.exists():
            if probe.parent == probe:
                break
            probe = probe.parent
        if probe.exists() and not probe.is_dir():
            raise ValueError(f"{probe} is not a directory")
        if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
            raise ValueError(f"{probe} is not writable by this user")
        return value


# -- the components: a union of the registered models, told apart by "type" --------


def _union(registered: dict[str, Registered[Any]]) -> Any:
    return Annotated[Union[tuple(r.config for r in registered.values())], Field(discriminator="type")]  # noqa: UP007


if TYPE_CHECKING:  # what every member has, for the type checker
    InputConfig = InputConfigBase
    FilterConfig = FilterConfigBase
    OutputConfig = OutputConfigBase
else:
    InputConfig = _union(INPUTS)
    FilterConfig = _union(FILTERS)
    OutputConfig = _union(OUTPUTS)


class MonitorSettings(Strict):
    """/metrics, /api/plugins.json and /health over HTTP (absent section: no monitor)."""

    bind: str = "127.0.0.1"
    port: int = Field(24220, ge=0, le=65535)
    # An output with a backlog that has delivered nothing for this long makes /health 503
    # (agent/health.py): judged by its oldest unsent event and its last success, not one try.
    unhealthy_after: Interval = 60.0


class AgentConfig(Strict):
    agent: AgentSettings = Field(default_factory=AgentSettings)
    monitor: MonitorSettings | None = None
    inputs: list[InputConfig] = []
    filters: list[FilterConfig] = []
    outputs: list[OutputConfig] = []

    def delivery_group(self, group: int) -> list[OutputConfigBase]:
        """The outputs delivery process ``group`` runs."""
        n = self.agent.delivery_processes
        return [o for i, o in enumerate(self.outputs) if i % n == group]

    @model_validator(mode="before")
    @classmethod
    def _default_names(cls, data: Any) -> Any:
        """A component without a name is ``<type>.<index>`` (``forward.0``)."""
        if not isinstance(data, dict):
            return data
        named = dict(data)
        for kind in ("inputs", "filters", "outputs"):
            items = data.get(kind)
            if isinstance(items, list):
                named[kind] = [
                    {**item, "name": f"{item.get('type')}.{i}"}
                    if isinstance(item, dict) and item.get("name") is None
                    else item
                    for i, item in enumerate(items)
                ]
        return named

    @model_validator(mode="after")
    def _names_and_ports(self) -> AgentConfig:
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
        return self


_TYPE_NAMES = {*INPUTS, *FILTERS, *OUTPUTS}


def _format_error(path: Path, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        # pydantic puts the union member's tag ("forward") in the location: not the user's key
        loc = ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and p in _TYPE_NAMES))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{path}: {loc or '(top level)'}: {msg}")
    return "\n".join(lines)


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
        return AgentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_error(origin, exc)) from None


def load_config(path: str | os.PathLike) -> AgentConfig:
    return load_config_text(read_config_text(path), path)
