"""Fluentd tag patterns, compiled once.

Rules (fluentd lib/fluent/match.rb): ``*`` matches one tag part, ``**`` zero
or more parts (``a.**`` matches ``a`` too), ``{x,y}`` alternatives, several
patterns separated by spaces match if any does, and ``/regex/`` is a regular
expression. Fluent Bit treats ``*`` as a plain glob; we follow Fluentd.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache


def _glob_to_regex(pattern: str) -> str:
    stack: list[list[str]] = []  # alternatives collected per open "{"
    parts: list[str] = [""]
    dot = False
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**", i):
            if dot:
                parts[-1] += r"(?![^\.])"
                dot = False
            if pattern.startswith(".", i + 2):
                parts[-1] += r"(?:.*\.|\A)"
                i += 3
            else:
                parts[-1] += r".*"
                i += 2
            continue
        if dot:
            parts[-1] += r"\."
            dot = False
        if c == "\\" and i + 1 < n:
            parts[-1] += re.escape(pattern[i + 1])
            i += 2
            continue
        if c == ".":
            dot = True
        elif c == "*":
            parts[-1] += r"[^\.]*"
        elif c == "{":
            stack.append([])
            parts.append("")
        elif c == "}" and stack:
            stack[-1].append(parts.pop())
            parts[-1] += "(?:" + "|".join(stack.pop()) + ")"
        elif c == "," and stack:
            stack[-1].append(parts.pop())
            parts.append("")
        else:
            parts[-1] += re.escape(c)
        i += 1
    if dot:
        parts[-1] += r"\."
    while stack:
        stack[-1].append(parts.pop())
        parts[-1] += "(?:" + "|".join(stack.pop()) + ")"
    return r"\A" + parts[-1] + r"\Z"


def compile_pattern(patterns: str) -> Callable[[str], bool]:
    """A predicate for a ``match`` string (one or more space-separated patterns)."""
    regexes = []
    for p in patterns.split():
        if len(p) >= 2 and p.startswith("/") and p.endswith("/"):
            regexes.append(r"\A(?:" + p[1:-1] + r")\Z")
        else:
            regexes.append(_glob_to_regex(p))
    if not regexes:
        raise ValueError("match pattern is empty")
    rx = re.compile("|".join(f"(?:{r})" for r in regexes), re.DOTALL)

    @lru_cache(maxsize=4096)
    def matches(tag: str) -> bool:
        return rx.match(tag) is not None

    return matches
