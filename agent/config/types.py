"""The value types every component's config shares, each validated in one place.

Durations accept ``"250ms"``, ``"30s"``, ``"5m"``, ``"1h"``, ``"7d"`` or a
number of seconds; sizes ``"16MiB"``, ``"512KB"`` or a number of bytes.
Secrets (shared keys, passwords, tokens) may be written as ``"env:NAME"`` or
``"file:/path"``; they are resolved at load time and never printed. A
component's config model sits beside its code and builds on the bases here;
agent/registry.py lists them all.

The models are msgspec structs, validated by ``msgspec.convert`` (in C, as the
journal's codec): frozen, unknown keys refused. Why not pydantic: it held 11 MB
of every sidecar's memory for a document read once at start. The types that
msgspec does not know (a duration, a size, a secret, a match pattern, a path)
are classes of their own, each parsed by :func:`_decode`; the checks that span
fields are each model's ``__post_init__``; what a sender may spell two ways is
made one spelling by the model's :meth:`Strict.prepare` before it is converted.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypeVar

import msgspec
from msgspec.structs import force_setattr

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


class _Duration(float):
    """Seconds, from a number or ``"30s"``."""

    @classmethod
    def parse(cls, value: Any) -> _Duration:
        return cls(parse_duration(value))


class _Interval(_Duration):
    """An interval or a timeout: something the agent waits for, so never 0."""

    @classmethod
    def parse(cls, value: Any) -> _Duration:
        seconds = parse_duration(value)
        if seconds < 0.001:
            raise ValueError("must be at least 1ms (0 would spin)")
        return cls(seconds)


class _Size(int):
    """Bytes, from a number or ``"16MiB"``."""

    @classmethod
    def parse(cls, value: Any) -> _Size:
        return cls(parse_size(value))


class Secret:
    """A value never printed: ``repr`` and the monitor show ``***`` (agent/secrets.py masks its
    every spelling in logs and answers)."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    @classmethod
    def parse(cls, value: Any) -> Secret:
        value = resolve_secret(value)
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {type(value).__name__}")
        return cls(value)


class _Text(str):
    """A string checked (and maybe rewritten) by ``check`` when it is read."""

    @classmethod
    def check(cls, value: str) -> str:
        return value

    @classmethod
    def parse(cls, value: Any) -> _Text:
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {type(value).__name__}")
        return cls(cls.check(value))


class _MatchPattern(_Text):
    """A tag pattern, as Fluentd's <match> (agent/routing.py)."""

    @classmethod
    def check(cls, value: str) -> str:
        try:
            compile_pattern(value)
        except (ValueError, re.error) as exc:
            raise ValueError(f"invalid match pattern {value!r}: {exc}") from None
        return value


_SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")


class _ComponentName(_Text):
    """A component's name names its files under data_dir (cursor, dead letters, state): two names
    must never map to one file, and none may step out of its directory."""

    @classmethod
    def check(cls, value: str) -> str:
        if not _SAFE_NAME.fullmatch(value) or set(value) == {"."}:
            raise ValueError(
                f"{value!r} is not a usable name: 1 to 100 letters, digits, '_', '.' or '-'"
                " (it names files under data_dir)"
            )
        return value


class _HttpUrl(_Text):
    """An http(s) URL."""

    @classmethod
    def check(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value


class _Endpoint(_HttpUrl):
    """An http(s) URL without its trailing slashes (paths are appended to it)."""

    @classmethod
    def check(cls, value: str) -> str:
        return super().check(value).rstrip("/")


# How an output writes records (agent/hive/records.py): "raw" as journaled; "snake" the
# Hive spec's fields only, by the spec's names; "camel" the same as the final store's columns.
KeyStyle = KeyStyleName

_PARSED: tuple[type, ...] = (_Duration, _Size, Secret, _Text)
_BUILTIN_OF: dict[type, type] = {_Duration: float, _Interval: float, _Size: int}
_BUILTIN_OF |= dict.fromkeys((_MatchPattern, _ComponentName, _HttpUrl, _Endpoint), str)

# What a model's fields are named by. To the type checker each is the builtin it subclasses (a
# MatchPattern is a str wherever one is taken); msgspec, reading the annotations at run time,
# finds the class, and _decode parses and checks the value by it.
if TYPE_CHECKING:
    Duration: TypeAlias = float
    Interval: TypeAlias = float
    Size: TypeAlias = int
    MatchPattern: TypeAlias = str
    ComponentName: TypeAlias = str
    HttpUrl: TypeAlias = str
    Endpoint: TypeAlias = str
else:
    Duration, Interval, Size = _Duration, _Interval, _Size
    MatchPattern, ComponentName, HttpUrl, Endpoint = _MatchPattern, _ComponentName, _HttpUrl, _Endpoint


def _decode(kind: type, value: Any) -> Any:
    """msgspec's hook for the types it does not know."""
    if isinstance(kind, type) and issubclass(kind, _PARSED):
        return kind.parse(value)  # type: ignore[attr-defined]
    if kind is Path:
        if not isinstance(value, str):
            raise TypeError(f"expected a path, got {type(value).__name__}")
        return Path(value)
    raise NotImplementedError(kind)


def _encode(value: Any) -> Any:
    """What a config shows of the types msgspec does not know: a secret never."""
    if isinstance(value, Secret):
        return "***"
    if isinstance(value, Path):
        return str(value)
    for plain in (str, float, int):  # a Duration, a Size, a MatchPattern: as the builtin it is
        if isinstance(value, plain):
            return plain(value)
    raise NotImplementedError(type(value))


S = TypeVar("S", bound="Strict")


class Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A model of the config: unknown keys refused, frozen once read."""

    @classmethod
    def prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        """The raw table made one spelling before it is converted (an alias, a value as a list)."""
        return data

    @classmethod
    def validate(cls: type[S], data: Any) -> S:
        """``data`` (a TOML table) as this model; msgspec.ValidationError says what and where."""
        if isinstance(data, dict):
            data = cls.prepare(data)
        return _plain(msgspec.convert(data, cls, dec_hook=_decode))

    def dump(self) -> Any:
        """As JSON-able builtins, secrets as ``***``."""
        return msgspec.to_builtins(self, enc_hook=_encode)

    def set_once(self, name: str, value: Any) -> None:
        """For ``__post_init__`` alone: a default that depends on another field."""
        force_setattr(self, name, value)


def _plain(value: Any) -> Any:
    """``value`` with every parsed value (a _Duration, a _MatchPattern) made the builtin it is: the
    types were for msgspec to find the parser by; what the agent holds and encodes is a float, a str."""
    if isinstance(value, Strict):
        for name in value.__struct_fields__:
            held = getattr(value, name)
            plain = _plain(held)
            if plain is not held:
                force_setattr(value, name, plain)
        return value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    builtin = _BUILTIN_OF.get(type(value))
    return value if builtin is None else builtin(value)


def field_names(model: type[Strict] | Strict) -> tuple[str, ...]:
    return model.__struct_fields__


def _key_style(data: dict[str, Any]) -> dict[str, Any]:
    if data.get("key_style") == "as_is":  # the name of earlier versions
        return {**data, "key_style": "raw"}
    return data


def check_tls_pair(cert: Path | None, key: Path | None) -> None:
    """A certificate and its key come together; each, when given, is a file that can be read."""
    if (cert is None) != (key is None):
        raise ValueError("tls_cert and tls_key go together")


def check_readable(**paths: Path | None) -> None:
    for name, p in paths.items():
        if p is not None and not p.is_file():
            raise ValueError(f"{name}: {p} is not a readable file")


class ComponentConfig(Strict, frozen=True, kw_only=True):
    """What every input, filter and output config has: its type and a name (by default
    ``<type>.<index>``, given by the document; a model built alone is named after its type)."""

    type: str
    name: ComponentName = ""

    def __post_init__(self) -> None:
        if not self.name:
            self.set_once("name", self.type)

    @classmethod
    def prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        return _key_style(data)

    def describe(self) -> str:
        """What ``hive-agent check`` says of it, after its name: the type and what matters most."""
        return self.type


class InputConfigBase(ComponentConfig, frozen=True, kw_only=True):
    def listens_on(self) -> tuple[str, int] | None:
        """The TCP address it binds, for the document's check that no two inputs share one."""
        return None


class FilterConfigBase(ComponentConfig, frozen=True, kw_only=True):
    match: MatchPattern = "**"

    def describe(self) -> str:
        return f"{self.type} match {self.match!r}"


class OutputConfigBase(ComponentConfig, frozen=True, kw_only=True):
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
    refund_values: list[Any] = msgspec.field(default_factory=lambda: list(REFUND_VALUES))

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


def at_least(model: Strict, **bounds: int | float) -> None:
    """For ``__post_init__``: each named field at least its bound. (A check's message that starts
    with a field's name and a colon is said at that key: agent/config/document.py.)"""
    for name, bound in bounds.items():
        value = getattr(model, name)
        if value is not None and value < bound:
            raise ValueError(f"{name}: must be at least {bound:g}")
