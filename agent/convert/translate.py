"""From the sections a reader found to this agent's config: what it supports, and the rest listed.

Supported: forward and tail sources; forward, http, file and stdout outputs
(Fluentd's copy stores each become an output); record_transformer's static
part (Fluent Bit: record_modifier and modify's Add/Remove). Values that name
the environment (``#{ENV['X']}``, ``${X}``) become ``env:X``. A tail
source's pos_file (Fluent Bit: DB) becomes import_pos_file
(import_fluentbit_db), so the switch has no gap.
"""

from __future__ import annotations

import re
from typing import Any

from agent.convert.model import LeftOut, Section

_FLUENTD_ENV = re.compile(r"""^#\{ENV\[['"](\w+)['"]\]\}$""")
_FLUENTBIT_ENV = re.compile(r"^\$\{(\w+)\}$")
_TRUE = ("true", "on", "yes", "1")
HIVE_PATH = "/v1/server-recv"


class Translation:
    def __init__(self) -> None:
        self.inputs: list[dict[str, Any]] = []
        self.filters: list[dict[str, Any]] = []
        self.outputs: list[dict[str, Any]] = []
        self.left_out: list[LeftOut] = []
        self.notes: list[str] = []  # translated, but not the same: said in the output

    def leave(self, where: str, what: str, why: str) -> None:
        self.left_out.append(LeftOut(where, what, why))

    def document(self, data_dir: str) -> dict[str, Any]:
        doc: dict[str, Any] = {"agent": {"data_dir": data_dir}, "monitor": {"bind": "127.0.0.1", "port": 24220}}
        for kind in ("inputs", "filters", "outputs"):
            if getattr(self, kind):
                doc[kind] = getattr(self, kind)
        return doc


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


def _name(section: Section, used: set[str], fallback: str) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", section.get("@id") or section.get("alias") or fallback)[:90] or fallback
    name, n = base, 1
    while name in used:
        n += 1
        name = f"{base}.{n}"
    used.add(name)
    return name


# -- Fluentd -----------------------------------------------------------------------------


def from_fluentd(sections: list[Section]) -> Translation:
    t = Translation()
    used: set[str] = set()
    for s in sections:
        if s.kind == "source":
            _fluentd_source(t, s, used)
        elif s.kind == "filter":
            _fluentd_filter(t, s, used)
        elif s.kind == "match":
            _fluentd_match(t, s, s.arg or "**", used)
        elif s.kind == "system":
            t.leave(s.where, "<system>", "process settings: [agent] holds this agent's own (log_level, data_dir)")
        else:
            t.leave(s.where, f"<{s.kind} {s.arg}>".strip(), "not a section this agent has (labels, relabel)")
    return t


def _unknown(t: Translation, s: Section, known: set[str], what: str) -> None:
    for key, (_, where) in s.params.items():
        if key not in known and not key.startswith("@"):
            t.leave(where, f"{what} {key}", "no equivalent here")
        elif key.startswith("@") and key not in ("@type", "@id", "@label", "@log_level"):
            t.leave(where, f"{what} {key}", "no equivalent here")
        elif key == "@label":
            t.leave(where, f"{what} @label", "labels route inside Fluentd; here every output matches tags")


def _fluentd_source(t: Translation, s: Section, used: set[str]) -> None:
    kind = s.get("@type")
    if kind == "forward":
        cfg: dict[str, Any] = {"type": "forward", "name": _name(s, used, f"forward.{len(t.inputs)}")}
        cfg["bind"] = s.get("bind", "0.0.0.0")
        cfg["port"] = int(s.get("port", "24224") or 24224)
        security = s.child("security")
        if security is not None:
            if security.get("shared_key"):
                cfg["shared_key"] = secret(security.get("shared_key") or "")
            if security.get("self_hostname"):
                cfg["self_hostname"] = security.get("self_hostname")
            users = [u for u in security.children if u.kind == "user"]
            if users:
                cfg["users"] = [
                    {"username": u.get("username"), "password": secret(u.get("password") or "")} for u in users
                ]
            _unknown(t, security, {"shared_key", "self_hostname", "user_auth"}, "<security>")
        transport = s.child("transport")
        if transport is not None and transport.arg == "tls":
            cfg["tls_cert"] = transport.get("cert_path")
            cfg["tls_key"] = transport.get("private_key_path")
            if flag(transport.get("client_cert_auth")) and transport.get("ca_path"):
                cfg["tls_ca"] = transport.get("ca_path")
            _unknown(
                t,
                transport,
                {"cert_path", "private_key_path", "client_cert_auth", "ca_path", "version"},
                "<transport tls>",
            )
        for key, ours in (("source_address_key", "source_address_key"), ("source_hostname_key", "source_hostname_key")):
            if s.get(key):
                cfg[ours] = s.get(key)
        _unknown(t, s, {"bind", "port", "source_address_key", "source_hostname_key"}, "<source> forward")
        t.inputs.append({k: v for k, v in cfg.items() if v is not None})
    elif kind == "tail":
        _tail(t, s, used, _FLUENTD_TAIL)
        parse = s.child("parse")
        if parse is None or parse.get("@type") != "json":
            where = parse.where if parse is not None else s.where
            t.leave(
                where,
                f"<parse> {parse.get('@type') if parse else '(none)'}",
                "lines must be JSON objects here (@type json)",
            )
        _unknown(
            t,
            s,
            {
                "path",
                "tag",
                "exclude_path",
                "pos_file",
                "read_from_head",
                "rotate_wait",
                "refresh_interval",
                "path_key",
                "follow_inodes",
            },
            "<source> tail",
        )
    else:
        t.leave(s.where, f"<source> @type {kind}", "only forward and tail sources are supported")


# The tail settings this agent has, by the key each peer writes them with.
_FLUENTD_TAIL = {
    "path": "path", "tag": "tag", "exclude_path": "exclude_path", "import_pos_file": "pos_file",
    "read_from_head": "read_from_head", "follow_inodes": "follow_inodes", "rotate_wait": "rotate_wait",
    "refresh_interval": "refresh_interval", "path_key": "path_key",
}  # fmt: skip
_FLUENTBIT_TAIL = {
    "path": "path", "tag": "tag", "exclude_path": "exclude_path", "import_fluentbit_db": "db",
    "read_from_head": "read_from_head", "rotate_wait": "rotate_wait", "refresh_interval": "refresh_interval",
    "path_key": "path_key",
}  # fmt: skip


def _tail(t: Translation, s: Section, used: set[str], keys: dict[str, str]) -> None:
    """A tail input from ``s``, whose settings are named as ``keys`` says (ours -> theirs)."""
    given = {ours: value for ours, theirs in keys.items() if (value := s.get(theirs)) is not None}
    path, tag = given.pop("path", None), given.pop("tag", None)
    if not path or not tag:
        t.leave(s.where, "tail", "needs a path and a tag")
        return
    cfg: dict[str, Any] = {"type": "tail", "name": _name(s, used, f"tail.{len(t.inputs)}")}
    cfg["path"] = [p.strip() for p in path.split(",") if p.strip()]
    cfg["tag"] = tag
    for ours, value in given.items():
        if ours == "exclude_path":
            cfg[ours] = [p.strip(" \"'[]") for p in value.split(",") if p.strip(" \"'[]")]
        elif ours in ("read_from_head", "follow_inodes"):
            cfg[ours] = flag(value)
        elif ours in ("rotate_wait", "refresh_interval"):
            cfg[ours] = duration(value)
        else:
            cfg[ours] = value
    t.inputs.append(cfg)


def _fluentd_filter(t: Translation, s: Section, used: set[str]) -> None:
    if s.get("@type") != "record_transformer":
        t.leave(s.where, f"<filter> @type {s.get('@type')}", "only record_transformer's static part is supported")
        return
    record = s.child("record")
    cfg: dict[str, Any] = {
        "type": "record_transformer",
        "name": _name(s, used, f"record_transformer.{len(t.filters)}"),
        "match": s.arg or "**",
    }
    if record is not None:
        fixed = {}
        for key, (value, where) in record.params.items():
            if "${" in value or "#{" in value:
                t.leave(where, f"<record> {key}", "a value computed per record (${...}) is not supported")
            else:
                fixed[key] = value
        if fixed:
            cfg["record"] = fixed
    if s.get("remove_keys"):
        cfg["remove_keys"] = [k.strip() for k in (s.get("remove_keys") or "").split(",") if k.strip()]
    _unknown(t, s, {"remove_keys"}, "<filter> record_transformer")
    t.filters.append(cfg)


def _retry(t: Translation, cfg: dict[str, Any], s: Section) -> None:
    buffer = s.child("buffer")
    if buffer is None:
        return
    for key in ("retry_wait", "retry_max_interval", "retry_timeout"):
        if buffer.get(key):
            cfg[key] = duration(buffer.get(key) or "")
    if buffer.get("retry_forever") is not None:
        cfg["retry_forever"] = flag(buffer.get("retry_forever"))
    known = {
        "retry_wait",
        "retry_max_interval",
        "retry_timeout",
        "retry_forever",
        "@type",
        "path",
        "flush_interval",
        "chunk_limit_size",
        "total_limit_size",
        "flush_mode",
        "flush_thread_count",
        "overflow_action",
    }
    for key, (_, where) in buffer.params.items():
        if key not in known:
            t.leave(where, f"<buffer> {key}", "the journal is this agent's buffer: no equivalent")
    if buffer.params:
        t.notes.append(f"{s.where}: <buffer>: the journal under data_dir replaces Fluentd's buffer")


def _fluentd_match(t: Translation, s: Section, pattern: str, used: set[str]) -> None:
    kind = s.get("@type")
    base: dict[str, Any] = {"match": pattern}
    if kind == "copy":
        for store in (c for c in s.children if c.kind == "store"):
            _fluentd_match(t, store, pattern, used)
        return
    if kind == "forward":
        cfg = {"type": "forward", "name": _name(s, used, f"forward.{len(t.outputs)}"), **base}
        servers = []
        for server in (c for c in s.children if c.kind == "server"):
            entry: dict[str, Any] = {"host": server.get("host")}
            if server.get("port"):
                entry["port"] = int(server.get("port") or 24224)
            if server.get("weight"):
                entry["weight"] = int(server.get("weight") or 60)
            if server.get("standby") is not None:
                entry["standby"] = flag(server.get("standby"))
            servers.append(entry)
        if not servers:
            t.leave(s.where, "<match> forward", "no <server>")
            return
        cfg["servers"] = servers
        for key in ("require_ack_response",):
            if s.get(key) is not None:
                cfg[key] = flag(s.get(key))
        for key in ("ack_response_timeout", "connect_timeout", "recover_wait", "heartbeat_interval"):
            if s.get(key):
                cfg[key] = duration(s.get(key) or "")
        if s.get("heartbeat_type") in ("transport", "udp", "none"):
            cfg["heartbeat_type"] = s.get("heartbeat_type")
        if s.get("compress") == "gzip":
            cfg["compress"] = "gzip"
        if s.get("keepalive") is not None:
            cfg["keepalive"] = flag(s.get("keepalive"))
        security = s.child("security")
        if security is not None:
            if security.get("shared_key"):
                cfg["shared_key"] = secret(security.get("shared_key") or "")
            if security.get("self_hostname"):
                cfg["self_hostname"] = security.get("self_hostname")
            if security.get("username"):
                cfg["username"] = security.get("username")
                cfg["password"] = secret(security.get("password") or "")
        if s.get("transport") == "tls":
            cfg["tls"] = True
            if s.get("tls_cert_path"):
                cfg["tls_ca"] = s.get("tls_cert_path")
            if s.get("tls_verify_hostname") is not None:
                cfg["tls_verify_hostname"] = flag(s.get("tls_verify_hostname"))
        _retry(t, cfg, s)
        _unknown(
            t,
            s,
            {
                "require_ack_response",
                "ack_response_timeout",
                "connect_timeout",
                "recover_wait",
                "heartbeat_interval",
                "heartbeat_type",
                "compress",
                "keepalive",
                "transport",
                "tls_cert_path",
                "tls_verify_hostname",
            },
            "<match> forward",
        )
        t.outputs.append(cfg)
    elif kind == "http":
        endpoint = s.get("endpoint") or ""
        if not endpoint.endswith(HIVE_PATH):
            t.leave(s.where, f"<match> http {endpoint}", f"the http output posts Hive's {HIVE_PATH} only")
            return
        cfg = {
            "type": "http",
            "name": _name(s, used, f"http.{len(t.outputs)}"),
            **base,
            "url": endpoint[: -len(HIVE_PATH)],
        }
        if s.get("headers"):
            t.leave(s.params["headers"][1], "headers", "write them as [outputs.headers] (values may be env:NAME)")
        _retry(t, cfg, s)
        _unknown(t, s, {"endpoint", "headers", "json_array", "content_type"}, "<match> http")
        t.outputs.append(cfg)
    elif kind == "file":
        path = s.get("path")
        if not path:
            t.leave(s.where, "<match> file", "no path")
            return
        cfg = {"type": "file", "name": _name(s, used, f"file.{len(t.outputs)}"), **base, "path": f"{path}.jsonl"}
        t.notes.append(f"{s.where}: <match> file: one JSON-lines file at {path}.jsonl, not Fluentd's time-sliced files")
        _retry(t, cfg, s)
        _unknown(t, s, {"path", "append", "compress"}, "<match> file")
        t.outputs.append(cfg)
    elif kind == "stdout":
        t.outputs.append({"type": "stdout", "name": _name(s, used, f"stdout.{len(t.outputs)}"), **base})
    else:
        t.leave(s.where, f"<match {pattern}> @type {kind}", "only forward, http, file and stdout outputs are supported")


# -- Fluent Bit --------------------------------------------------------------------------


def fluentbit_match(section: Section) -> str | None:
    """Fluent Bit's * matches across dots: Fluentd's **. Match_Regex becomes /regex/."""
    if section.get("match_regex"):
        return f"/{section.get('match_regex')}/"
    match = section.get("match")
    return None if match is None else match.replace("*", "**").replace("****", "**")


def from_fluentbit(sections: list[Section]) -> Translation:
    t = Translation()
    used: set[str] = set()
    for s in sections:
        name = (s.get("name") or "").lower()
        if s.kind == "service":
            t.leave(s.where, "[SERVICE]", "process settings: [agent] holds this agent's own")
        elif s.kind == "input":
            _fluentbit_input(t, s, name, used)
        elif s.kind == "filter":
            _fluentbit_filter(t, s, name, used)
        elif s.kind == "output":
            _fluentbit_output(t, s, name, used)
        else:
            t.leave(s.where, f"[{s.kind.upper()}]", "not a section this agent has")
    return t


def _fluentbit_input(t: Translation, s: Section, name: str, used: set[str]) -> None:
    if name == "forward":
        cfg: dict[str, Any] = {
            "type": "forward",
            "name": _name(s, used, f"forward.{len(t.inputs)}"),
            "bind": s.get("listen", "0.0.0.0"),
            "port": int(s.get("port", "24224") or 24224),
        }
        if s.get("shared_key"):
            cfg["shared_key"] = secret(s.get("shared_key") or "")
        if s.get("self_hostname"):
            cfg["self_hostname"] = s.get("self_hostname")
        if flag(s.get("tls")):
            cfg["tls_cert"], cfg["tls_key"] = s.get("tls.crt_file"), s.get("tls.key_file")
        _unknown(
            t,
            s,
            {
                "name",
                "listen",
                "port",
                "shared_key",
                "self_hostname",
                "tls",
                "tls.crt_file",
                "tls.key_file",
                "alias",
                "tag",
                "tag_prefix",
            },
            "[INPUT] forward",
        )
        t.inputs.append({k: v for k, v in cfg.items() if v is not None})
    elif name == "tail":
        _tail(t, s, used, _FLUENTBIT_TAIL)
        parser = s.get("parser")
        if parser is not None and parser.lower() != "json":
            t.leave(s.params["parser"][1], f"Parser {parser}", "lines must be JSON objects here (Parser json)")
        _unknown(
            t,
            s,
            {
                "name",
                "path",
                "tag",
                "exclude_path",
                "db",
                "read_from_head",
                "rotate_wait",
                "refresh_interval",
                "path_key",
                "parser",
                "alias",
                "db.sync",
                "mem_buf_limit",
                "buffer_chunk_size",
                "buffer_max_size",
                "skip_long_lines",
            },
            "[INPUT] tail",
        )
    else:
        t.leave(s.where, f"[INPUT] {name}", "only forward and tail inputs are supported")


def _fluentbit_filter(t: Translation, s: Section, name: str, used: set[str]) -> None:
    if name not in ("record_modifier", "modify"):
        t.leave(s.where, f"[FILTER] {name}", "only record_modifier and modify (Add, Remove) are supported")
        return
    record: dict[str, str] = {}
    remove: list[str] = []
    for key, (value, where) in s.params.items():
        base = key.split("#")[0]
        if base in ("record", "add", "set"):
            k, _, v = value.partition(" ")
            if "${" in v:
                t.leave(where, f"{base} {k}", "a value from the environment or the record is not supported")
            else:
                record[k] = v.strip()
        elif base in ("remove_key", "remove"):
            remove.append(value.strip())
        elif base not in ("name", "match", "match_regex", "alias"):
            t.leave(where, f"[FILTER] {name} {base}", "no equivalent here")
    cfg: dict[str, Any] = {
        "type": "record_transformer",
        "name": _name(s, used, f"record_transformer.{len(t.filters)}"),
        "match": fluentbit_match(s) or "**",
    }
    if record:
        cfg["record"] = record
    if remove:
        cfg["remove_keys"] = remove
    t.filters.append(cfg)


def _fluentbit_output(t: Translation, s: Section, name: str, used: set[str]) -> None:
    match = fluentbit_match(s) or "**"
    retry_limit = s.get("retry_limit")
    if name == "forward":
        cfg: dict[str, Any] = {
            "type": "forward",
            "name": _name(s, used, f"forward.{len(t.outputs)}"),
            "match": match,
            "servers": [{"host": s.get("host", "127.0.0.1"), "port": int(s.get("port", "24224") or 24224)}],
        }
        if s.get("require_ack_response") is not None:
            cfg["require_ack_response"] = flag(s.get("require_ack_response"))
        if s.get("shared_key"):
            cfg["shared_key"] = secret(s.get("shared_key") or "")
        if s.get("self_hostname"):
            cfg["self_hostname"] = s.get("self_hostname")
        if s.get("username"):
            cfg["username"], cfg["password"] = s.get("username"), secret(s.get("password") or "")
        if (s.get("compress") or "").lower() == "gzip":
            cfg["compress"] = "gzip"
        if flag(s.get("tls")):
            cfg["tls"] = True
            if s.get("tls.ca_file"):
                cfg["tls_ca"] = s.get("tls.ca_file")
            if s.get("tls.verify") is not None:
                cfg["tls_verify"] = flag(s.get("tls.verify"))
        known = {
            "name",
            "match",
            "match_regex",
            "host",
            "port",
            "require_ack_response",
            "shared_key",
            "self_hostname",
            "username",
            "password",
            "compress",
            "tls",
            "tls.ca_file",
            "tls.verify",
            "retry_limit",
            "alias",
        }
    elif name == "http":
        uri = s.get("uri", "/") or "/"
        if not uri.endswith(HIVE_PATH):
            t.leave(s.where, f"[OUTPUT] http {uri}", f"the http output posts Hive's {HIVE_PATH} only")
            return
        scheme = "https" if flag(s.get("tls")) else "http"
        base = uri[: -len(HIVE_PATH)]
        cfg = {
            "type": "http",
            "name": _name(s, used, f"http.{len(t.outputs)}"),
            "match": match,
            "url": f"{scheme}://{s.get('host', '127.0.0.1')}:{s.get('port', '80')}{base}",
        }
        headers = {}
        for key, (value, _) in s.params.items():
            if key.split("#")[0] == "header":
                k, _, v = value.partition(" ")
                headers[k] = secret(v.strip())
        if headers:
            cfg["headers"] = headers
        if (s.get("compress") or "").lower() == "gzip":
            cfg["compress"] = "gzip"
        known = {
            "name",
            "match",
            "match_regex",
            "host",
            "port",
            "uri",
            "tls",
            "compress",
            "retry_limit",
            "alias",
            "format",
        } | {k for k in s.params if k.split("#")[0] == "header"}
    elif name == "file":
        directory, file = s.get("path", ".") or ".", s.get("file")
        cfg = {
            "type": "file",
            "name": _name(s, used, f"file.{len(t.outputs)}"),
            "match": match,
            "path": f"{directory.rstrip('/')}/{file or '{tag}'}.jsonl",
        }
        known = {"name", "match", "match_regex", "path", "file", "retry_limit", "alias", "format"}
    elif name == "stdout":
        cfg = {"type": "stdout", "name": _name(s, used, f"stdout.{len(t.outputs)}"), "match": match}
        known = {"name", "match", "match_regex", "retry_limit", "alias", "format"}
    else:
        t.leave(s.where, f"[OUTPUT] {name}", "only forward, http, file and stdout outputs are supported")
        return
    if retry_limit is not None:
        if retry_limit.lower() in ("false", "no_limits"):
            cfg["retry_forever"] = True
        else:
            t.notes.append(
                f"{s.params['retry_limit'][1]}: Retry_Limit {retry_limit}: retries here are bounded by "
                f"retry_timeout (72h), then the records go to the dead-letter store"
            )
    _unknown(t, s, known, f"[OUTPUT] {name}")
    t.outputs.append(cfg)
