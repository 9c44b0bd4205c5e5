"""Metric families in the Prometheus text exposition format (version 0.0.4). Pure: no I/O.

Why not prometheus-client: the monitor builds its families afresh from the components'
readings at each scrape, so the library's registry, collectors and HTTP servers go
unused, and importing it holds about 4 MB in every sidecar. What is left is the
format, which is small: ``# HELP`` and ``# TYPE`` lines, then ``name{labels} value``.
A counter's samples are named ``<name>_total``, as prometheus-client names them, so
dashboards and alert rules read the same series.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Family:
    __slots__ = ("name", "help", "kind", "labels", "samples")

    def __init__(self, name: str, help: str, kind: str, labels: Sequence[str] = (), value: float | None = None):
        self.name = name + "_total" if kind == "counter" and not name.endswith("_total") else name
        self.help = help
        self.kind = kind
        self.labels = tuple(labels)
        self.samples: list[tuple[tuple[str, ...], float]] = []
        if value is not None:
            self.samples.append(((), value))

    def add_metric(self, labels: Sequence[str], value: float) -> None:
        if len(labels) != len(self.labels):
            raise ValueError(f"{self.name}: {len(self.labels)} label values expected, got {len(labels)}")
        self.samples.append((tuple(labels), value))


def counter(name: str, help: str, labels: Sequence[str] = (), value: float | None = None) -> Family:
    return Family(name, help, "counter", labels, value)


def gauge(name: str, help: str, labels: Sequence[str] = (), value: float | None = None) -> Family:
    return Family(name, help, "gauge", labels, value)


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _help_text(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    """As prometheus-client writes a value (``1.0``, ``+Inf``), so that scrapes read the same as before."""
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def render(families: Iterable[Family]) -> bytes:
    out: list[str] = []
    for family in families:
        out.append(f"# HELP {family.name} {_help_text(family.help)}")
        out.append(f"# TYPE {family.name} {family.kind}")
        for values, value in family.samples:
            if values:
                labels = ",".join(f'{k}="{_label_value(str(v))}"' for k, v in zip(family.labels, values))
                out.append(f"{family.name}{{{labels}}} {_number(value)}")
            else:
                out.append(f"{family.name} {_number(value)}")
    return ("\n".join(out) + "\n").encode()
