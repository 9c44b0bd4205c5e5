"""The input registry: config type → builder. Explicit, no discovery."""

from __future__ import annotations


def _forward(cfg, journal, filters):
    from agent.inputs.forward import ForwardInput
    return ForwardInput(cfg, journal, filters)


BUILDERS = {"forward": _forward}


def build_input(cfg, journal, filters):
    return BUILDERS[cfg.type](cfg, journal, filters)
