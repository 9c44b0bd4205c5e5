"""The value types every component's config shares, each validated in one place.

Durations accept ``"250ms"``, ``"30s"``, ``"5m"``, ``"1h"``, ``"7d"`` or a
number of seconds; sizes ``"16MiB"``, ``"512KB"`` or a number of bytes.
Secrets (shared keys, passwords, tokens) may be written as ``"env:NAME"`` or
``"file:/path"``; they are resolved at load time and never printed. A
component's config model sits beside its code and builds on the bases here;
agent/registry.py lists them all.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    SecretStr,
    model_validator,
)

from agent.hive.records import REFUND_VALUES
from agent.hive.records import KeyStyle as KeyStyleName
from agent.routing import compile_pattern

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "ki": 1024,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mi": 1024**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gi": 1024**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ti": 1024**4,
    "tib": 1024**4,
}


def parse_duration(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '30s'")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{value!r} is not a duration: it must be a finite number of seconds, not negative")
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"{value!r} is not a duration (e.g. '250ms', '30s', '5m', '1h', '7d')")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def parse_size(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("a size is a number of bytes or a string like '16MiB'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise ValueError(f"{value!r} is not a size (e.g. '512KiB', '16MiB', '1GiB')")
    return int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").lower()])


def resolve_secret(value: Any) -> Any:
    if isinstance(value, str):
        if value.startswith("env:"):
            name = value[4:]
            if name not in os.environ:
                raise ValueError(f"environment variable {name} is not set")
            return os.environ[name]
        if value.startswith("file:"):
            try:
                return Path(value[5:]).read_text().strip()
            except OSError as exc:
                raise ValueError(f"cannot read secret file {value[5:]}: {exc.strerror}") from None
    return value


def _some_time(value: float) -> float:
    if value < 0.001:
        raise ValueError("must be at least 1ms (0 would spin)")
    return value


Duration = Annotated[float, BeforeValidator(parse_duration)]
# An interval or a timeout: something the agent waits for, so never 0.
Interval = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_some_time)]
Size = Annotated[int, BeforeValidator(parse_size)]
Secret = Annotated[SecretStr, BeforeValidator(resolve_secret), PlainSerializer(lambda s: "***", return_type=str)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_match(value: str) -> str:
    try:
        compile_pattern(value)
    except (ValueError, re.error) as exc:
        raise ValueError(f"invalid match pattern {value!r}: {exc}") from None
    return value


MatchPattern = Annotated[str, BeforeValidator(_check_match)]

_SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")


def _check_name(value: str) -> str:
    """A component's name names its files under data_dir (cursor, dead letters, state): two names
    must never map to one file, and none may step out of its directory."""
    if not _SAFE_NAME.fullmatch(value) or set(value) == {"."}:
        raise ValueError(
            f"{value!r} is not a usable name: 1 to 100 letters, digits, '_', '.' or '-' (it names files under data_dir)"
        )
    return value


ComponentName = Annotated[str, AfterValidator(_check_name)]


def _key_style(value: Any) -> Any:
    return "raw" if value == "as_is" else value  # the name of earlier versions


# How an output writes records (agent/hive/records.py): "raw" as journaled; "snake" the
# Hive spec's fields only, by the spec's names; "camel" the same as the final store's columns.
KeyStyle = Annotated[KeyStyleName, BeforeValidator(_key_style)]


def _http_url(value: str) -> str:
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value


# An http(s) URL; an Endpoint is one without its trailing slashes (paths are appended to it).
HttpUrl = Annotated[str, AfterValidator(_http_url)]
Endpoint = Annotated[str, AfterValidator(lambda v: _http_url(v).rstrip("/"))]


def check_tls_pair(cert: Path | None, key: Path | None) -> None:
    """A certificate and its key come together; each, when given, is a file that can be read."""
    if (cert is None) != (key is None):
        raise ValueError("tls_cert and tls_key go together")


def check_readable(**paths: Path | None) -> None:
    for name, p in paths.items():
        if p is not None and not p.is_file():
            raise ValueError(f"{name}: {p} is not a readable file")


class ComponentConfig(Strict):
    """What every input, filter and output config has: its type and a name (by default
    ``<type>.<index>``, given by the document; a model built alone is named after its type)."""

    type: str
    name: ComponentName

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("name") is None and "type" in data:
            data = {**data, "name": str(data["type"])}
        return data

    def describe(self) -> str:
        """What ``hive-agent check`` says of it, after its name: the type and what matters most."""
        return self.type


class InputConfigBase(ComponentConfig):
    def listens_on(self) -> tuple[str, int] | None:
        """The TCP address it binds, for the document's check that no two inputs share one."""
        return None


class FilterConfigBase(ComponentConfig):
    match: MatchPattern = "**"

    def describe(self) -> str:
        return f"{self.type} match {self.match!r}"


class OutputConfigBase(ComponentConfig):
    match: MatchPattern = "**"
    retry_wait: Interval = 1.0
    retry_max_interval: Interval = 60.0
    retry_timeout: Duration = 72 * 3600.0
    retry_forever: bool = False
    batch_bytes: Size = 4 * 1024 * 1024
    # An output a reload adds, with no cursor of its own: "end" reads from the journal's end as of
    # the reload (what came before went to the outputs configured then), "oldest" from the oldest
    # event the journal still holds. At the agent's start an output without a cursor takes all.
    reload_start_at: Literal["end", "oldest"] = "end"
    # A refund carries its purchase's transaction_id, and the Hive spec has no field that says
    # "refund": rendered to the spec, it would be the purchase a second time. An output that
    # renders the spec (renders_hive_spec) skips refunds, counted, unless it asks for them.
    refunds: Literal["skip", "send"] = "skip"
    refund_field: str = "refund"  # as the hive filter's
    refund_values: list[Any] = list(REFUND_VALUES)

    @property
    def renders_hive_spec(self) -> bool:
        """Does it send the Hive spec's fields alone (no field outside it, the refund flag among them)?"""
        return False

    @property
    def skips_refunds(self) -> bool:
        return self.refunds == "skip" and self.renders_hive_spec

    @property
    def routing_match(self) -> str:
        """The tags the delivery loop hands this output (mirrors add the identity records)."""
        return self.match

    def destination(self) -> str:
        """Where it sends, for ``check`` ("" when the type says it all)."""
        return ""

    def describe(self) -> str:
        where = self.destination()
        return f"{self.type} match {self.match!r}" + (f" {where}" if where else "")
