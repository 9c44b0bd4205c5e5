"""What the readers produce: sections of key/value settings, each with where it was written."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Section:
    kind: str  # Fluentd: source, match, filter, server, security, buffer, ...; Fluent Bit: input, output, ...
    arg: str  # Fluentd: the section's argument (a match pattern); "" where there is none
    where: str  # "file:line"
    params: dict[str, tuple[str, str]] = field(default_factory=dict)  # lower-cased key -> (value, where)
    children: list[Section] = field(default_factory=list)

    def get(self, key: str, default: str | None = None) -> str | None:
        found = self.params.get(key.lower())
        return found[0] if found is not None else default

    def child(self, kind: str) -> Section | None:
        return next((c for c in self.children if c.kind == kind), None)


@dataclass
class LeftOut:
    where: str
    what: str
    why: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}: {self.why}"


class ConvertError(Exception):
    """The file cannot be read as a config of that kind."""
