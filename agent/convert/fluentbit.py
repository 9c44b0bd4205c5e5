"""Reading a Fluent Bit config: the classic ``[SECTION]`` format (with ``@INCLUDE`` and ``@SET``)
and the YAML one (``pipeline: inputs / filters / outputs``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from agent.convert.model import ConvertError, Section
from agent.convert.source import ReadBudget, load_yaml

_VAR = re.compile(r"\$\{(\w+)\}")
MAX_INCLUDE_DEPTH = 16


def read(path: Path, budget: ReadBudget | None = None) -> list[Section]:
    budget = budget or ReadBudget()
    if path.suffix.lower() in (".yaml", ".yml"):
        return _read_yaml(path, 0, budget)
    return _read_classic(path, {}, 0, budget)


def _read_classic(path: Path, variables: dict[str, str], depth: int, budget: ReadBudget) -> list[Section]:
    if depth > MAX_INCLUDE_DEPTH:
        raise ConvertError(f"{path}: @INCLUDE nested more than {MAX_INCLUDE_DEPTH} deep")
    lines = budget.text(path).splitlines()
    sections: list[Section] = []
    current: Section | None = None
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        where = f"{path}:{number}"
        if not line or line.startswith("#"):
            continue
        upper = line.upper()
        if upper.startswith("@SET "):
            key, _, value = line[5:].partition("=")
            variables[key.strip()] = value.strip()
            continue
        if upper.startswith("@INCLUDE "):
            target = path.parent / line.split(None, 1)[1].strip()
            for included in sorted(target.parent.glob(target.name)) if "*" in target.name else [target]:
                sections.extend(_read_classic(included, variables, depth + 1, budget))
            continue
        if line.startswith("[") and line.endswith("]"):
            current = Section(line[1:-1].strip().lower(), "", where)
            sections.append(current)
            continue
        if current is None:
            raise ConvertError(f"{where}: a setting outside any [SECTION]")
        key, _, value = line.partition(" ")
        value = _VAR.sub(lambda m: variables.get(m.group(1), m.group(0)), value.strip())
        lowered = key.lower()
        if lowered in current.params and lowered in ("record", "add", "header", "remove_key", "remove"):
            lowered = f"{lowered}#{len(current.params)}"  # repeatable keys: keep each
        current.params[lowered] = (value, where)
    return sections


def _read_yaml(path: Path, depth: int, budget: ReadBudget) -> list[Section]:
    if depth > MAX_INCLUDE_DEPTH:
        raise ConvertError(f"{path}: includes nested more than {MAX_INCLUDE_DEPTH} deep")
    doc = load_yaml(path, budget.text(path)) or {}
    if not isinstance(doc, dict):
        raise ConvertError(f"{path}: a YAML config is a map (service, pipeline, ...)")
    sections: list[Section] = []
    for included in doc.get("includes") or []:
        sections.extend(_read_yaml(path.parent / str(included), depth + 1, budget))
    if isinstance(doc.get("service"), dict):
        sections.append(_yaml_section("service", doc["service"], f"{path}:service"))
    pipeline = doc.get("pipeline") or {}
    for kind in ("inputs", "filters", "outputs"):
        for i, item in enumerate(pipeline.get(kind) or []):
            if isinstance(item, dict):
                sections.append(_yaml_section(kind[:-1], item, f"{path}:pipeline.{kind}[{i}]"))
    return sections


def _yaml_section(kind: str, item: dict[str, Any], where: str) -> Section:
    section = Section(kind, "", where)
    for key, value in item.items():
        values = value if isinstance(value, list) else [value]
        for n, v in enumerate(values):
            text = "true" if v is True else "false" if v is False else str(v)
            section.params[key.lower() if n == 0 else f"{key.lower()}#{n}"] = (text, f"{where}.{key}")
    return section
