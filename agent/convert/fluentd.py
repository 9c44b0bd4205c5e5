"""Reading a Fluentd (td-agent) config: ``<section arg>`` blocks, ``key value`` lines, ``@include``."""

from __future__ import annotations

import glob
import re
from pathlib import Path

from agent.convert.model import ConvertError, Section
from agent.convert.source import ReadBudget

_OPEN = re.compile(r"^<\s*([\w.-]+)(?:\s+(.*?))?\s*>$")
_CLOSE = re.compile(r"^</\s*([\w.-]+)\s*>$")
MAX_INCLUDE_DEPTH = 16


def _strip_comment(line: str) -> str:
    """The line without a # comment; a # inside quotes ("#{ENV['X']}") is kept."""
    quote = None
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def read(path: Path, depth: int = 0, budget: ReadBudget | None = None) -> list[Section]:
    """The top-level sections of ``path``, with every ``@include`` read in its place."""
    if depth > MAX_INCLUDE_DEPTH:
        raise ConvertError(f"{path}: @include nested more than {MAX_INCLUDE_DEPTH} deep")
    budget = budget or ReadBudget()
    lines = budget.text(path).splitlines()
    top = Section("(top)", "", f"{path}:0")
    stack = [top]
    for number, raw in enumerate(lines, 1):
        line = _strip_comment(raw).strip()
        where = f"{path}:{number}"
        if not line:
            continue
        if line.startswith("@include"):
            pattern = line.split(None, 1)[1].strip() if " " in line else ""
            target = pattern if Path(pattern).is_absolute() else str(path.parent / pattern)
            matched = sorted(glob.glob(target)) if glob.has_magic(target) else [target]
            for included in matched:
                stack[-1].children.extend(read(Path(included), depth + 1, budget))
            continue
        closing = _CLOSE.match(line)
        if closing:
            if len(stack) == 1 or stack[-1].kind != closing.group(1):
                raise ConvertError(f"{where}: </{closing.group(1)}> closes nothing open")
            stack.pop()
            continue
        opening = _OPEN.match(line)
        if opening:
            section = Section(opening.group(1), (opening.group(2) or "").strip(), where)
            stack[-1].children.append(section)
            stack.append(section)
            continue
        key, _, value = line.partition(" ")
        stack[-1].params[key.lower()] = (_unquote(value), where)
    if len(stack) > 1:
        raise ConvertError(f"{stack[-1].where}: <{stack[-1].kind}> is never closed")
    return top.children
