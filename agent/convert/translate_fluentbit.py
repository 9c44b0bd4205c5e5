"""A Fluent Bit config's sections in this agent's terms (keys.py holds the key tables)."""

from __future__ import annotations

from typing import Any

from agent.convert import keys as k
from agent.convert.model import Section
from agent.convert.translate import HIVE_PATH, Translation, tail, take


def fluentbit_match(section: Section) -> str | None:
    """Fluent Bit's * matches across dots: Fluentd's **. Match_Regex becomes /regex/."""
    if section.get("match_regex"):
        return f"/{section.get('match_regex')}/"
    match = section.get("match")
    return None if match is None else match.replace("*", "**").replace("****", "**")


def from_fluentbit(sections: list[Section]) -> Translation:
    t = Translation()
    for s in sections:
        name = (s.get("name") or "").lower()
        if s.kind == "service":
            t.leave(s.where, "[SERVICE]", "process settings: [agent] holds this agent's own")
        elif s.kind == "input":
            _input(t, s, name)
        elif s.kind == "filter":
            _filter(t, s, name)
        elif s.kind == "output":
            _output(t, s, name)
        else:
            t.leave(s.where, f"[{s.kind.upper()}]", "not a section this agent has")
    return t


def _input(t: Translation, s: Section, name: str) -> None:
    if name == "forward":
        cfg: dict[str, Any] = {"type": "forward", "name": t.name(s, f"forward.{len(t.inputs)}")}
        cfg["bind"], cfg["port"] = "0.0.0.0", 24224
        take(t, s, k.FLUENTBIT_FORWARD_INPUT, cfg, "[INPUT] forward")
        if k.flag(s.get("tls")):
            cfg["tls_cert"], cfg["tls_key"] = s.get("tls.crt_file"), s.get("tls.key_file")
        t.inputs.append({key: v for key, v in cfg.items() if v is not None})
    elif name == "tail":
        tail(t, s, k.FLUENTBIT_TAIL, "[INPUT] tail")
        parser = s.get("parser")
        if parser is not None and parser.lower() != "json":
            t.leave(s.params["parser"][1], f"Parser {parser}", "lines must be JSON objects here (Parser json)")
    else:
        t.leave(s.where, f"[INPUT] {name}", "only forward and tail inputs are supported")


def _filter(t: Translation, s: Section, name: str) -> None:
    if name not in ("record_modifier", "modify"):
        t.leave(s.where, f"[FILTER] {name}", "only record_modifier and modify (Add, Remove) are supported")
        return
    record: dict[str, str] = {}
    remove: list[str] = []
    for key, (value, where) in s.params.items():
        base = key.split("#")[0]
        if base in ("record", "add", "set"):
            field, _, v = value.partition(" ")
            if "${" in v:
                t.leave(where, f"{base} {field}", "a value from the environment or the record is not supported")
            else:
                record[field] = v.strip()
        elif base in ("remove_key", "remove"):
            remove.append(value.strip())
        elif base not in ("name", "match", "match_regex", "alias"):
            t.leave(where, f"[FILTER] {name} {base}", "no equivalent here")
    cfg: dict[str, Any] = {
        "type": "record_transformer",
        "name": t.name(s, f"record_transformer.{len(t.filters)}"),
        "match": fluentbit_match(s) or "**",
    }
    if record:
        cfg["record"] = record
    if remove:
        cfg["remove_keys"] = remove
    t.filters.append(cfg)


def _output(t: Translation, s: Section, name: str) -> None:
    match = fluentbit_match(s) or "**"
    cfg: dict[str, Any]
    if name == "forward":
        cfg = {
            "type": "forward",
            "name": t.name(s, f"forward.{len(t.outputs)}"),
            "match": match,
            "servers": [{"host": s.get("host", "127.0.0.1"), "port": int(s.get("port", "24224") or 24224)}],
        }
        if k.flag(s.get("tls")):
            cfg["tls"] = True
            if s.get("tls.ca_file"):
                cfg["tls_ca"] = s.get("tls.ca_file")
            if s.get("tls.verify") is not None:
                cfg["tls_verify"] = k.flag(s.get("tls.verify"))
        table = k.FLUENTBIT_FORWARD_OUTPUT
    elif name == "http":
        uri = s.get("uri", "/") or "/"
        if not uri.endswith(HIVE_PATH):
            t.leave(s.where, f"[OUTPUT] http {uri}", f"the http output posts Hive's {HIVE_PATH} only")
            return
        scheme = "https" if k.flag(s.get("tls")) else "http"
        cfg = {
            "type": "http",
            "name": t.name(s, f"http.{len(t.outputs)}"),
            "match": match,
            "url": f"{scheme}://{s.get('host', '127.0.0.1')}:{s.get('port', '80')}{uri[: -len(HIVE_PATH)]}",
        }
        headers = {}
        for key, (value, _) in s.params.items():
            if key.split("#")[0] == "header":
                header, _, v = value.partition(" ")
                headers[header] = k.secret(v.strip())
        if headers:
            cfg["headers"] = headers
        # Header lines come numbered from the reader (header#2, ...): known, read just above.
        numbered = frozenset(key for key in s.params if key.split("#")[0] == "header")
        base = k.FLUENTBIT_HTTP_OUTPUT
        table = k.KeyTable(base.kind, base.type, base.keys, base.handled | numbered)
    elif name == "file":
        directory, file = s.get("path", ".") or ".", s.get("file")
        cfg = {
            "type": "file",
            "name": t.name(s, f"file.{len(t.outputs)}"),
            "match": match,
            "path": f"{directory.rstrip('/')}/{file or '{tag}'}.jsonl",
        }
        table = k.FLUENTBIT_FILE_OUTPUT
    elif name == "stdout":
        cfg = {"type": "stdout", "name": t.name(s, f"stdout.{len(t.outputs)}"), "match": match}
        table = k.FLUENTBIT_STDOUT_OUTPUT
    else:
        t.leave(s.where, f"[OUTPUT] {name}", "only forward, http, file and stdout outputs are supported")
        return
    retry_limit = s.get("retry_limit")
    if retry_limit is not None:
        if retry_limit.lower() in ("false", "no_limits"):
            cfg["retry_forever"] = True
        else:
            t.notes.append(
                f"{s.params['retry_limit'][1]}: Retry_Limit {retry_limit}: retries here are bounded by "
                f"retry_timeout (72h), then the records go to the dead-letter store"
            )
    take(t, s, table, cfg, f"[OUTPUT] {name}")
    t.outputs.append(cfg)
