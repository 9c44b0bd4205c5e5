"""From the sections a reader found to this agent's config: what is shared by both peers.

Supported: forward and tail sources; forward, http, file and stdout outputs
(Fluentd's copy stores each become an output); record_transformer's static
part (Fluent Bit: record_modifier and modify's Add/Remove). Values that name
the environment (``#{ENV['X']}``, ``${X}``) become ``env:X``. A tail
source's pos_file (Fluent Bit: DB) becomes import_pos_file
(import_fluentbit_db), so the switch has no gap.

Which key becomes which is in the key tables (keys.py); each peer's sections are translated
by translate_fluentd.py and translate_fluentbit.py.
"""

from __future__ import annotations

import re
from typing import Any

from agent.convert.keys import KeyTable
from agent.convert.model import LeftOut, Section

HIVE_PATH = "/v1/server-recv"
_FLUENTD_META = ("@type", "@id", "@label", "@log_level")


class Translation:
    def __init__(self) -> None:
        self.inputs: list[dict[str, Any]] = []
        self.filters: list[dict[str, Any]] = []
        self.outputs: list[dict[str, Any]] = []
        self.left_out: list[LeftOut] = []
        self.notes: list[str] = []  # translated, but not the same: said in the output
        self.used: set[str] = set()  # component names given so far

    def leave(self, where: str, what: str, why: str) -> None:
        self.left_out.append(LeftOut(where, what, why))

    def name(self, section: Section, fallback: str) -> str:
        """The section's @id (Fluent Bit: Alias), else ``fallback``; never one given before."""
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", section.get("@id") or section.get("alias") or fallback)[:90]
        base = base or fallback
        name, n = base, 1
        while name in self.used:
            n += 1
            name = f"{base}.{n}"
        self.used.add(name)
        return name

    def document(self, data_dir: str) -> dict[str, Any]:
        doc: dict[str, Any] = {"agent": {"data_dir": data_dir}, "monitor": {"bind": "127.0.0.1", "port": 24220}}
        for kind in ("inputs", "filters", "outputs"):
            if getattr(self, kind):
                doc[kind] = getattr(self, kind)
        return doc


def take(t: Translation, s: Section, table: KeyTable, cfg: dict[str, Any], what: str) -> None:
    """Copy into ``cfg`` every key of ``table`` that ``s`` sets, converted; report the keys of ``s``
    the table does not know as left out."""
    for theirs, (ours, convert) in table.keys.items():
        value = s.get(theirs)
        if value is None or value == "":
            continue
        converted = convert(value)
        if converted is not None:
            cfg[ours] = converted
    unknown(t, s, table.known, what)


def unknown(t: Translation, s: Section, known: frozenset[str] | set[str], what: str) -> None:
    for key, (_, where) in s.params.items():
        if key == "@label":
            t.leave(where, f"{what} @label", "labels route inside Fluentd; here every output matches tags")
        elif key not in known and key not in _FLUENTD_META:
            t.leave(where, f"{what} {key}", "no equivalent here")


def tail(t: Translation, s: Section, table: KeyTable, what: str) -> None:
    """A tail input from ``s``: it needs a path and a tag; the rest as ``table`` maps it."""
    if not s.get(_theirs(table, "path")) or not s.get(_theirs(table, "tag")):
        t.leave(s.where, "tail", "needs a path and a tag")
        unknown(t, s, table.known, what)
        return
    cfg: dict[str, Any] = {"type": "tail", "name": t.name(s, f"tail.{len(t.inputs)}")}
    take(t, s, table, cfg, what)
    cfg["path"] = [p.strip() for p in cfg["path"].split(",") if p.strip()]
    t.inputs.append(cfg)


def _theirs(table: KeyTable, ours: str) -> str:
    return next(theirs for theirs, (mine, _) in table.keys.items() if mine == ours)
