"""A Fluentd (td-agent) config's sections in this agent's terms (keys.py holds the key tables)."""

from __future__ import annotations

from typing import Any

from agent.convert import keys as k
from agent.convert.model import Section
from agent.convert.translate import HIVE_PATH, Translation, tail, take, unknown


def from_fluentd(sections: list[Section]) -> Translation:
    t = Translation()
    for s in sections:
        if s.kind == "source":
            _source(t, s)
        elif s.kind == "filter":
            _filter(t, s)
        elif s.kind == "match":
            _match(t, s, s.arg or "**")
        elif s.kind == "system":
            t.leave(s.where, "<system>", "process settings: [agent] holds this agent's own (log_level, data_dir)")
        else:
            t.leave(s.where, f"<{s.kind} {s.arg}>".strip(), "not a section this agent has (labels, relabel)")
    return t


def _source(t: Translation, s: Section) -> None:
    kind = s.get("@type")
    if kind == "forward":
        cfg: dict[str, Any] = {"type": "forward", "name": t.name(s, f"forward.{len(t.inputs)}")}
        cfg["bind"], cfg["port"] = "0.0.0.0", 24224
        take(t, s, k.FLUENTD_FORWARD_SOURCE, cfg, "<source> forward")
        security = s.child("security")
        if security is not None:
            take(t, security, k.FLUENTD_SECURITY, cfg, "<security>")
            users = [u for u in security.children if u.kind == "user"]
            if users:
                cfg["users"] = [
                    {"username": u.get("username"), "password": k.secret(u.get("password") or "")} for u in users
                ]
        transport = s.child("transport")
        if transport is not None and transport.arg == "tls":
            take(t, transport, k.FLUENTD_TLS, cfg, "<transport tls>")
            if k.flag(transport.get("client_cert_auth")) and transport.get("ca_path"):
                cfg["tls_ca"] = transport.get("ca_path")
        t.inputs.append(cfg)
    elif kind == "tail":
        tail(t, s, k.FLUENTD_TAIL, "<source> tail")
        parse = s.child("parse")
        if parse is None or parse.get("@type") != "json":
            where = parse.where if parse is not None else s.where
            t.leave(
                where,
                f"<parse> {parse.get('@type') if parse else '(none)'}",
                "lines must be JSON objects here (@type json)",
            )
    else:
        t.leave(s.where, f"<source> @type {kind}", "only forward and tail sources are supported")


def _filter(t: Translation, s: Section) -> None:
    if s.get("@type") != "record_transformer":
        t.leave(s.where, f"<filter> @type {s.get('@type')}", "only record_transformer's static part is supported")
        return
    record = s.child("record")
    cfg: dict[str, Any] = {
        "type": "record_transformer",
        "name": t.name(s, f"record_transformer.{len(t.filters)}"),
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
    take(t, s, k.FLUENTD_RECORD_TRANSFORMER, cfg, "<filter> record_transformer")
    t.filters.append(cfg)


def _retry(t: Translation, cfg: dict[str, Any], s: Section) -> None:
    buffer = s.child("buffer")
    if buffer is None:
        return
    for theirs, (ours, convert) in k.FLUENTD_BUFFER.keys.items():
        value = buffer.get(theirs)
        if value is not None and value != "":
            cfg[ours] = convert(value)
    for key, (_, where) in buffer.params.items():  # not "no equivalent here": why there is none
        if key not in k.FLUENTD_BUFFER.known:
            t.leave(where, f"<buffer> {key}", "the journal is this agent's buffer: no equivalent")
    if buffer.params:
        t.notes.append(f"{s.where}: <buffer>: the journal under data_dir replaces Fluentd's buffer")


def _match(t: Translation, s: Section, pattern: str) -> None:
    kind = s.get("@type")
    base: dict[str, Any] = {"match": pattern}
    if kind == "copy":
        for store in (c for c in s.children if c.kind == "store"):
            _match(t, store, pattern)
        return
    if kind == "forward":
        cfg = {"type": "forward", "name": t.name(s, f"forward.{len(t.outputs)}"), **base}
        servers = []
        for server in (c for c in s.children if c.kind == "server"):
            entry: dict[str, Any] = {"host": server.get("host")}
            if server.get("port"):
                entry["port"] = int(server.get("port") or 24224)
            if server.get("weight"):
                entry["weight"] = int(server.get("weight") or 60)
            if server.get("standby") is not None:
                entry["standby"] = k.flag(server.get("standby"))
            servers.append(entry)
        if not servers:
            t.leave(s.where, "<match> forward", "no <server>")
            return
        cfg["servers"] = servers
        take(t, s, k.FLUENTD_FORWARD_MATCH, cfg, "<match> forward")
        security = s.child("security")
        if security is not None:
            take(t, security, k.FLUENTD_FORWARD_SECURITY, cfg, "<security>")
        if s.get("transport") == "tls":
            cfg["tls"] = True
            if s.get("tls_cert_path"):
                cfg["tls_ca"] = s.get("tls_cert_path")
            if s.get("tls_verify_hostname") is not None:
                cfg["tls_verify_hostname"] = k.flag(s.get("tls_verify_hostname"))
        _retry(t, cfg, s)
        t.outputs.append(cfg)
    elif kind == "http":
        endpoint = s.get("endpoint") or ""
        if not endpoint.endswith(HIVE_PATH):
            t.leave(s.where, f"<match> http {endpoint}", f"the http output posts Hive's {HIVE_PATH} only")
            return
        cfg = {"type": "http", "name": t.name(s, f"http.{len(t.outputs)}"), **base, "url": endpoint[: -len(HIVE_PATH)]}
        if s.get("headers"):
            t.leave(s.params["headers"][1], "headers", "write them as [outputs.headers] (values may be env:NAME)")
        _retry(t, cfg, s)
        unknown(t, s, k.FLUENTD_HTTP_MATCH.known, "<match> http")
        t.outputs.append(cfg)
    elif kind == "file":
        path = s.get("path")
        if not path:
            t.leave(s.where, "<match> file", "no path")
            return
        cfg = {"type": "file", "name": t.name(s, f"file.{len(t.outputs)}"), **base, "path": f"{path}.jsonl"}
        t.notes.append(f"{s.where}: <match> file: one JSON-lines file at {path}.jsonl, not Fluentd's time-sliced files")
        _retry(t, cfg, s)
        unknown(t, s, k.FLUENTD_FILE_MATCH.known, "<match> file")
        t.outputs.append(cfg)
    elif kind == "stdout":
        t.outputs.append({"type": "stdout", "name": t.name(s, f"stdout.{len(t.outputs)}"), **base})
    else:
        t.leave(s.where, f"<match {pattern}> @type {kind}", "only forward, http, file and stdout outputs are supported")
