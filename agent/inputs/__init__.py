"""The input registry: config type → builder. Explicit, no discovery."""

from __future__ import annotations


def _forward(cfg, journal, filters, deadletters, data_dir):
    from agent.inputs.forward import ForwardInput
    return ForwardInput(cfg, journal, filters)


def _tail(cfg, journal, filters, deadletters, data_dir):
    from agent.inputs.tail import TailInput
    return TailInput(cfg, journal, filters, deadletters, data_dir)


BUILDERS = {"forward": _forward, "tail": _tail}


def build_input(cfg, journal, filters, deadletters, data_dir):
    return BUILDERS[cfg.type](cfg, journal, filters, deadletters, data_dir)
