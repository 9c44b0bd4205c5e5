"""The key tables: for each (peer, component), which of the peer's keys become which of ours.

One table per section kind is the whole truth about it: ``take`` copies the keys a table maps
(converted), and every key of the section that is neither mapped nor listed as ``handled``
(read by code of its own: servers, users, a TLS block, what has no effect here) is reported as
left out. A unit test checks every ``ours`` against the component's config model
(agent/registry.py), so a renamed option fails there.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_FLUENTD_ENV = re.compile(r"""^#\{ENV\[['"](\w+)['"]\]\}$""")
_FLUENTBIT_ENV = re.compile(r"^\$\{(\w+)\}$")
_TRUE = ("true", "on", "yes", "1")


def secret(value: str) -> str:
    """An environment reference as this agent writes it; a literal stays as it is."""
    for pattern in (_FLUENTD_ENV, _FLUENTBIT_ENV):
        m = pattern.match(value.strip())
        if m:
            return f"env:{m.group(1)}"
    return value


def flag(value: str | None) -> bool:
    return (value or "").strip().lower() in _TRUE


def duration(value: str) -> str | float:
    v = value.strip()
    return float(v) if re.fullmatch(r"\d+(\.\d+)?", v) else v


def text(value: str) -> str:
    return value


def gzip_only(value: str) -> str | None:
    """compress: gzip is the one this agent's outputs speak; anything else is the default (none)."""
    return "gzip" if value.strip().lower() == "gzip" else None


def one_of(*choices: str) -> Callable[[str], str | None]:
    def choose(value: str) -> str | None:
        return value if value in choices else None

    return choose


def names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


def paths(value: str) -> list[str]:
    return [p.strip(" \"'[]") for p in value.split(",") if p.strip(" \"'[]")]


@dataclass(frozen=True)
class KeyTable:
    """``keys``: theirs → (ours, how the value converts); ``handled``: theirs, read elsewhere."""

    kind: str  # "input", "filter", "output": with ``type``, whose config model ``ours`` belong to
    type: str  # in agent/registry.py; "*": every output's (OutputConfigBase)
    keys: dict[str, tuple[str, Callable[[str], Any]]]
    handled: frozenset[str] = field(default_factory=frozenset)

    @property
    def known(self) -> frozenset[str]:
        return frozenset(self.keys) | self.handled


def table(component: str, keys: dict[str, tuple[str, Callable[[str], Any]]], *handled: str) -> KeyTable:
    """``component``: "<kind> <type>", as "input forward"."""
    kind, type_ = component.split()
    return KeyTable(kind, type_, keys, frozenset(handled))


# -- Fluentd ---------------------------------------------------------------------------------

FLUENTD_FORWARD_SOURCE = table(
    "input forward",
    {
        "bind": ("bind", text),
        "port": ("port", int),
        "source_address_key": ("source_address_key", text),
        "source_hostname_key": ("source_hostname_key", text),
    },
)
FLUENTD_SECURITY = table(
    "input forward", {"shared_key": ("shared_key", secret), "self_hostname": ("self_hostname", text)}, "user_auth"
)
FLUENTD_TLS = table(
    "input forward",
    {"cert_path": ("tls_cert", text), "private_key_path": ("tls_key", text)},
    "client_cert_auth",  # with ca_path: clients must present a certificate (tls_ca)
    "ca_path",
    "version",
)
FLUENTD_TAIL = table(
    "input tail",
    {
        "path": ("path", text),
        "tag": ("tag", text),
        "exclude_path": ("exclude_path", paths),
        "pos_file": ("import_pos_file", text),
        "read_from_head": ("read_from_head", flag),
        "follow_inodes": ("follow_inodes", flag),
        "rotate_wait": ("rotate_wait", duration),
        "refresh_interval": ("refresh_interval", duration),
        "path_key": ("path_key", text),
    },
)
FLUENTD_RECORD_TRANSFORMER = table(
    "filter record_transformer",
    {"remove_keys": ("remove_keys", lambda v: [k.strip() for k in v.split(",") if k.strip()])},
)
FLUENTD_BUFFER = table(
    "output *",  # every output has these (OutputConfigBase)
    {
        "retry_wait": ("retry_wait", duration),
        "retry_max_interval": ("retry_max_interval", duration),
        "retry_timeout": ("retry_timeout", duration),
        "retry_forever": ("retry_forever", flag),
    },
    # Fluentd's buffer itself: the journal under data_dir replaces it.
    "@type",
    "path",
    "flush_interval",
    "chunk_limit_size",
    "total_limit_size",
    "flush_mode",
    "flush_thread_count",
    "overflow_action",
)
FLUENTD_FORWARD_MATCH = table(
    "output forward",
    {
        "require_ack_response": ("require_ack_response", flag),
        "ack_response_timeout": ("ack_response_timeout", duration),
        "connect_timeout": ("connect_timeout", duration),
        "recover_wait": ("recover_wait", duration),
        "heartbeat_interval": ("heartbeat_interval", duration),
        "heartbeat_type": ("heartbeat_type", one_of("transport", "udp", "none")),
        "compress": ("compress", gzip_only),
        "keepalive": ("keepalive", flag),
    },
    "transport",  # "tls": tls = true, and then these two
    "tls_cert_path",
    "tls_verify_hostname",
)
FLUENTD_FORWARD_SECURITY = table(
    "output forward",
    {
        "shared_key": ("shared_key", secret),
        "self_hostname": ("self_hostname", text),
        "username": ("username", text),
        "password": ("password", secret),
    },
)
FLUENTD_HTTP_MATCH = table("output http", {}, "endpoint", "headers", "json_array", "content_type")
FLUENTD_FILE_MATCH = table("output file", {}, "path", "append", "compress")

# -- Fluent Bit ------------------------------------------------------------------------------

_FLUENTBIT_ANY = ("name", "alias")
_FLUENTBIT_OUTPUT = (*_FLUENTBIT_ANY, "match", "match_regex", "retry_limit")

FLUENTBIT_FORWARD_INPUT = table(
    "input forward",
    {
        "listen": ("bind", text),
        "port": ("port", int),
        "shared_key": ("shared_key", secret),
        "self_hostname": ("self_hostname", text),
    },
    *_FLUENTBIT_ANY,
    "tls",  # on: tls.crt_file and tls.key_file
    "tls.crt_file",
    "tls.key_file",
    "tag",
    "tag_prefix",
)
FLUENTBIT_TAIL = table(
    "input tail",
    {
        "path": ("path", text),
        "tag": ("tag", text),
        "exclude_path": ("exclude_path", paths),
        "db": ("import_fluentbit_db", text),
        "read_from_head": ("read_from_head", flag),
        "rotate_wait": ("rotate_wait", duration),
        "refresh_interval": ("refresh_interval", duration),
        "path_key": ("path_key", text),
    },
    *_FLUENTBIT_ANY,
    "parser",  # json, or said otherwise
    "db.sync",
    "mem_buf_limit",
    "buffer_chunk_size",
    "buffer_max_size",
    "skip_long_lines",
)
FLUENTBIT_FORWARD_OUTPUT = table(
    "output forward",
    {
        "require_ack_response": ("require_ack_response", flag),
        "shared_key": ("shared_key", secret),
        "self_hostname": ("self_hostname", text),
        "username": ("username", text),
        "password": ("password", secret),
        "compress": ("compress", gzip_only),
    },
    *_FLUENTBIT_OUTPUT,
    "host",  # servers
    "port",
    "tls",  # on: tls = true, and then these two
    "tls.ca_file",
    "tls.verify",
)
FLUENTBIT_HTTP_OUTPUT = table(
    "output http",
    {"compress": ("compress", gzip_only)},
    *_FLUENTBIT_OUTPUT,
    "host",  # url
    "port",
    "uri",
    "tls",
    "format",
)
FLUENTBIT_FILE_OUTPUT = table("output file", {}, *_FLUENTBIT_OUTPUT, "path", "file", "format")
FLUENTBIT_STDOUT_OUTPUT = table("output stdout", {}, *_FLUENTBIT_OUTPUT, "format")

TABLES = [value for name, value in dict(globals()).items() if name.isupper() and isinstance(value, KeyTable)]
