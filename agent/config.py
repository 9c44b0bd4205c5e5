"""The configuration: TOML validated by pydantic, unknown keys rejected.

Everything is checked before anything starts (``hive-agent check`` runs the
same code). Durations accept ``"250ms"``, ``"30s"``, ``"5m"``, ``"1h"``,
``"7d"`` or a number of seconds; sizes ``"16MiB"``, ``"512KB"`` or a number of
bytes. Secrets (shared keys, passwords) may be written as ``"env:NAME"`` or
``"file:/path"``; they are resolved at load time and never printed.
"""

from __future__ import annotations

import math
import os
import re
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from agent.errors import ConfigError
from agent.hive.records import REFUND_VALUES
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
KeyStyle = Annotated[Literal["raw", "snake", "camel"], BeforeValidator(_key_style)]


# -- [agent] -----------------------------------------------------------------


class JournalSettings(Strict):
    fsync: Literal["always", "interval", "off"] = "always"
    fsync_interval: Annotated[Interval, Field(ge=0.01)] = 1.0  # fsyncs below 10ms apart: use "always"
    segment_bytes: Size = 64 * 1024 * 1024
    max_bytes: Size = 2 * 1024 * 1024 * 1024

    @model_validator(mode="after")
    def _limits(self):
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
    journal: JournalSettings = JournalSettings()
    # Outputs run in this many delivery processes (output i in process i mod n): one core each.
    delivery_processes: int = Field(1, ge=1, le=16)

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


# -- [[inputs]] --------------------------------------------------------------


class User(Strict):
    username: str
    password: Secret


class ForwardInputConfig(Strict):
    type: Literal["forward"]
    name: ComponentName | None = None
    bind: str = "0.0.0.0"
    port: int = Field(24224, ge=0, le=65535)
    unix_path: Path | None = None
    udp_heartbeat: bool = True
    shared_key: Secret | None = None
    self_hostname: str = Field(default_factory=socket.gethostname)
    users: list[User] = []
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None  # when set, clients must present a certificate signed by it
    max_frame_size: Annotated[Size, Field(ge=1024)] = 16 * 1024 * 1024
    max_decompressed_size: Annotated[Size, Field(ge=1024)] = 64 * 1024 * 1024
    source_address_key: str | None = None
    source_hostname_key: str | None = None
    max_inflight_frames: int = Field(8, ge=1)
    # With shared_key: a connection that has not authenticated by then is closed.
    handshake_timeout: Interval = 10.0
    # Bounds on what peers can hold: connections at once (also kept under the open-file limit),
    # the time a started frame has to complete (a 1 byte/s sender), the time a connection may stay
    # silent (0: for ever, as Fluentd), and the bytes of incomplete frames across all connections.
    max_connections: int = Field(4096, ge=1)
    frame_timeout: Interval = 60.0
    idle_timeout: Duration = 3600.0
    max_buffered_bytes: Annotated[Size, Field(ge=1024)] = 256 * 1024 * 1024

    @model_validator(mode="after")
    def _tls_pair(self):
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.tls_ca is not None and self.tls_cert is None:
            raise ValueError("tls_ca needs tls_cert and tls_key")
        if self.users and self.shared_key is None:
            raise ValueError("users need shared_key (the handshake carries them)")
        for f in ("tls_cert", "tls_key", "tls_ca"):
            p = getattr(self, f)
            if p is not None and not p.is_file():
                raise ValueError(f"{f}: {p} is not a readable file")
        return self


_TAG_FIELD = re.compile(r"\{(\w+)\}")


def _str_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class TailInputConfig(Strict):
    """Fluentd's in_tail, for JSON-lines files. Defaults follow Fluentd, except
    ``max_line_size`` (bounded here) and the position file (always kept)."""

    type: Literal["tail"]
    name: ComponentName | None = None
    path: Annotated[list[str], BeforeValidator(_str_list)]
    exclude_path: Annotated[list[str], BeforeValidator(_str_list)] = []
    tag: str
    # Named groups taken from the path fill {name} in tag, as Fluent Bit's Tag_Regex does.
    tag_regex: str | None = None
    read_from_head: bool = False
    follow_inodes: bool = False
    rotate_wait: Duration = 5.0
    refresh_interval: Interval = 60.0
    # Every watched file is stat'ed this often. inotify reports changes at once; this is the safety
    # net for what it misses (network file systems, a full event queue). Fluentd's watch timer is 1s;
    # 3s keeps a thousand idle files under 1% of a core.
    stat_interval: Interval = 3.0
    max_line_size: Size = 1024 * 1024
    read_bytes_limit: Size = 256 * 1024  # parsed a read at a time; 1MiB reads measured no faster
    path_key: str | None = None
    pos_file: Path | None = None  # default: <data_dir>/tail/<name>.pos.json

    @field_validator("path")
    @classmethod
    def _paths(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one path pattern is needed")
        for p in value:
            if not os.path.isabs(p):
                raise ValueError(f"{p!r}: path patterns must be absolute")
        return value

    @model_validator(mode="after")
    def _tag_fields(self):
        fields = set(_TAG_FIELD.findall(self.tag))
        groups: set[str] = set()
        if self.tag_regex is not None:
            try:
                groups = set(re.compile(self.tag_regex).groupindex)
            except re.error as exc:
                raise ValueError(f"tag_regex: {exc}") from None
        missing = fields - groups
        if missing:
            raise ValueError(
                f"tag {self.tag!r} uses {{{', '.join(sorted(missing))}}} but tag_regex has no such named group"
            )
        if self.max_line_size < 16 or self.read_bytes_limit < 4096:
            raise ValueError("max_line_size must be at least 16 bytes and read_bytes_limit at least 4KiB")
        return self


InputConfig = Annotated[ForwardInputConfig | TailInputConfig, Field(discriminator="type")]


# -- [[filters]] -------------------------------------------------------------


class RecordTransformerConfig(Strict):
    """Fluentd's record_transformer, the static part: set and remove keys."""

    type: Literal["record_transformer"]
    name: ComponentName | None = None
    match: MatchPattern = "**"
    record: dict[str, Any] = {}
    remove_keys: list[str] = []


class HiveFilterConfig(Strict):
    """Normalize purchase records to the Hive purchase_log spec (agent/hive/purchase_log.py)."""

    type: Literal["hive"]
    name: ComponentName | None = None
    match: MatchPattern = "ha2union.game.*.purchase_log"
    # strict: every spec violation dead-letters the record; otherwise (the default) it is
    # kept as sent and warned, and the mirrors refuse what they cannot send.
    strict: bool = False
    # A purchase (app_id, transaction_id, refund) seen within this window is delivered once; 0 turns it off.
    dedup_window: Duration = 7 * 86400.0
    # The field that marks a record as the refund of a purchase (same transaction_id).
    refund_field: str = "refund"
    refund_values: list[Any] = list(REFUND_VALUES)


FilterConfig = Annotated[RecordTransformerConfig | HiveFilterConfig, Field(discriminator="type")]


# -- [[outputs]] -------------------------------------------------------------


class OutputBase(Strict):
    name: ComponentName | None = None
    match: MatchPattern = "**"
    retry_wait: Interval = 1.0
    retry_max_interval: Interval = 60.0
    retry_timeout: Duration = 72 * 3600.0
    retry_forever: bool = False
    batch_bytes: Size = 4 * 1024 * 1024

    @property
    def routing_match(self) -> str:
        """The tags the delivery loop hands this output (mirrors add the identity records)."""
        return self.match


class FileOutputConfig(OutputBase):
    type: Literal["file"]
    # "{tag}" and "{tag[N]}" expand per event, e.g. "var/out/{tag}.jsonl".
    path: str
    fsync: bool = True
    key_style: KeyStyle = "raw"

    @field_validator("path")
    @classmethod
    def _path_template(cls, value: str) -> str:
        from agent.outputs.file import PathTemplate

        PathTemplate(value)
        return value


class StdoutOutputConfig(OutputBase):
    type: Literal["stdout"]
    key_style: KeyStyle = "raw"


class ForwardServer(Strict):
    host: str
    port: int = Field(24224, ge=1, le=65535)
    weight: int = Field(60, ge=1)
    standby: bool = False


class ForwardOutputConfig(OutputBase):
    """Fluentd out_forward to aggregators (the Hive collectors)."""

    type: Literal["forward"]
    servers: list[ForwardServer] = Field(min_length=1)
    require_ack_response: bool = False
    ack_response_timeout: Interval = 190.0
    connect_timeout: Interval = 10.0
    recover_wait: Duration = 10.0
    keepalive: bool = True
    compress: Literal["text", "gzip"] = "text"
    heartbeat_type: Literal["transport", "udp", "none"] = "transport"
    heartbeat_interval: Interval = 1.0
    chunk_limit_records: int = Field(10_000, ge=1)
    chunk_limit_size: Size = 8 * 1024 * 1024
    shared_key: Secret | None = None
    self_hostname: str = Field(default_factory=socket.gethostname)
    username: str | None = None
    password: Secret | None = None
    tls: bool = False
    tls_ca: Path | None = None
    tls_verify: bool = True
    tls_verify_hostname: bool = True
    tls_cert: Path | None = None  # a client certificate, when the server asks for one
    tls_key: Path | None = None
    # "snake": the fields outside the Hive spec (kept by the hive filter for the mirrors) never reach the servers.
    key_style: KeyStyle = "snake"

    @model_validator(mode="after")
    def _checks(self):
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.username and self.shared_key is None:
            raise ValueError("username needs shared_key (the handshake carries it)")
        return self


class HttpOutputConfig(OutputBase):
    """Hive's HTTP ingestion: POST {url}/v1/server-recv."""

    type: Literal["http"]
    url: str
    compress: Literal["text", "gzip"] = "text"
    timeout: Interval = 30.0
    batch_records: int = Field(500, ge=1)
    batch_bytes: Size = 1024 * 1024
    default_app_id: str | None = None  # for records without app_id
    key_style: KeyStyle = "snake"
    headers: dict[str, Secret] = {}

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @model_validator(mode="after")
    def _one_authorization(self):
        from urllib.parse import urlsplit

        if urlsplit(self.url).username is not None and any(k.lower() == "authorization" for k in self.headers):
            raise ValueError("url credentials and an Authorization header both authorize: give one of them")
        return self


class MirrorApp(Strict):
    """One Hive app_id's settings at a vendor. The token comes from the environment or a file."""

    app_id: str | None = None  # the vendor's app id (AppsFlyer: the package name, or "id" + digits on iOS)
    bundle_id: str | None = None
    service_number: int | None = None  # Wisetracker's _wtno
    token_env: str | None = None
    token_file: Path | None = None
    token: Secret | None = None

    @model_validator(mode="after")
    def _token(self):
        sources = [s for s in (self.token_env, self.token_file, self.token) if s is not None]
        if len(sources) > 1:
            raise ValueError("give one of token_env, token_file, token")
        if self.token_env is not None:
            object.__setattr__(self, "token", SecretStr(resolve_secret(f"env:{self.token_env}")))
        elif self.token_file is not None:
            object.__setattr__(self, "token", SecretStr(resolve_secret(f"file:{self.token_file}")))
        return self


class MirrorOutputBase(OutputBase):
    """What the three vendor mirrors share (agent/outputs/mirror.py)."""

    match: MatchPattern = "ha2union.game.*.purchase_log"
    endpoint: str
    apps: dict[str, MirrorApp] = {}  # keyed by the Hive app_id
    in_flight: int = Field(8, ge=1, le=1024)
    rate_limit: float | None = Field(None, gt=0)  # requests per second
    timeout: Interval = 10.0
    mirror_test_purchases: bool = False
    refund_field: str = "refund"
    refund_values: list[Any] = list(REFUND_VALUES)
    identity_match: MatchPattern = "ha2union.game.*.device_ids"
    delivered_retention: Duration = 30 * 86400.0
    # A batch's requests go out together and the next batch waits for the last answer:
    # bigger batches keep more requests in flight (1 MiB: about 1,500 purchases).
    batch_bytes: Size = 1024 * 1024

    @field_validator("endpoint")
    @classmethod
    def _endpoint_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")

    @property
    def routing_match(self) -> str:
        """What the delivery loop hands this output: the purchases, and the identity records it learns."""
        return f"{self.match} {self.identity_match}"


class AppsFlyerOutputConfig(MirrorOutputBase):
    type: Literal["appsflyer"]
    endpoint: str = "https://api3.appsflyer.com"
    rate_limit: float | None = Field(900.0, gt=0)  # AppsFlyer: stay under 1,000 requests per second
    max_event_age: Duration = 7 * 86400.0
    server_errors_before_dead_letter: int = Field(5, ge=1)

    @model_validator(mode="after")
    def _ios_ids(self):
        for hive_app, app in self.apps.items():
            if not app.app_id:
                raise ValueError(f"apps.{hive_app}: app_id (the AppsFlyer app id) is required")
            ios = ".ios." in hive_app or hive_app.endswith(".ios") or ".apple." in hive_app
            if ios and not re.fullmatch(r"id\d+", app.app_id):
                raise ValueError(
                    f"apps.{hive_app}: iOS app_id {app.app_id!r} must be 'id' + digits "
                    f"(AppsFlyer answers 200 and drops the event otherwise)"
                )
            if app.token is None:
                raise ValueError(f"apps.{hive_app}: token_env, token_file or token is required")
        return self


class WisetrackerOutputConfig(MirrorOutputBase):
    type: Literal["wisetracker"]
    endpoint: str = "https://trk.analytics.wisetracker.co.kr/s2s/v1/s2sDataRcv.do"
    first_purchase: bool = False  # w_first_purchase when this agent has not seen the user buy before

    @model_validator(mode="after")
    def _service_numbers(self):
        for hive_app, app in self.apps.items():
            if app.service_number is None:
                raise ValueError(f"apps.{hive_app}: service_number (_wtno) is required")
            if app.token is None:
                raise ValueError(f"apps.{hive_app}: token_env, token_file or token is required")
        return self


class NaverOutputConfig(MirrorOutputBase):
    type: Literal["naver"]
    fx_to_krw: dict[str, float] = {}
    all_apps: bool = True  # without [apps], mirror every app; a token is then optional


OutputConfig = Annotated[
    FileOutputConfig
    | StdoutOutputConfig
    | ForwardOutputConfig
    | HttpOutputConfig
    | AppsFlyerOutputConfig
    | WisetrackerOutputConfig
    | NaverOutputConfig,
    Field(discriminator="type"),
]


class MonitorSettings(Strict):
    """/metrics, /api/plugins.json and /health over HTTP (absent section: no monitor)."""

    bind: str = "127.0.0.1"
    port: int = Field(24220, ge=0, le=65535)


class AgentConfig(Strict):
    agent: AgentSettings = AgentSettings()
    monitor: MonitorSettings | None = None
    inputs: list[InputConfig] = []
    filters: list[FilterConfig] = []
    outputs: list[OutputConfig] = []

    def delivery_group(self, group: int) -> list:
        """The outputs delivery process ``group`` runs."""
        n = self.agent.delivery_processes
        return [o for i, o in enumerate(self.outputs) if i % n == group]

    @model_validator(mode="after")
    def _names_and_ports(self):
        seen: set[str] = set()
        for kind, items in (("inputs", self.inputs), ("filters", self.filters), ("outputs", self.outputs)):
            for i, item in enumerate(items):
                if item.name is None:
                    object.__setattr__(item, "name", f"{item.type}.{i}")
                if item.name in seen:
                    raise ValueError(f"{kind}[{i}]: name {item.name!r} is used twice")
                seen.add(item.name)
        ports: set[tuple[str, int]] = set()
        for inp in self.inputs:
            if getattr(inp, "port", 0):
                key = (inp.bind, inp.port)
                if key in ports:
                    raise ValueError(f"two inputs listen on {inp.bind}:{inp.port}")
                ports.add(key)
        if not self.inputs:
            raise ValueError("at least one [[inputs]] is needed")
        if not self.outputs:
            raise ValueError("at least one [[outputs]] is needed (events are journaled for the outputs)")
        return self


def _format_error(path: Path, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(
            str(p)
            for p in err["loc"]
            if not (
                isinstance(p, str)
                and p
                in (
                    "forward",
                    "tail",
                    "file",
                    "stdout",
                    "record_transformer",
                    "hive",
                    "http",
                    "appsflyer",
                    "wisetracker",
                    "naver",
                )
            )
        )
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{path}: {loc or '(top level)'}: {msg}")
    return "\n".join(lines)


def load_config(path: str | os.PathLike) -> AgentConfig:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return AgentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_error(path, exc)) from None
