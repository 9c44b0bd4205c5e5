"""The input registry: config type → builder. Explicit, no discovery."""

from __future__ import annotations


def _forward(cfg, ingest, data_dir):
    from agent.inputs.forward import ForwardInput

    return ForwardInput(cfg, ingest)


def _tail(cfg, ingest, data_dir):
    from agent.inputs.tail import TailInput

    return TailInput(cfg, ingest, data_dir)


BUILDERS = {"forward": _forward, "tail": _tail}


def build_input(cfg, ingest, data_dir):
    return BUILDERS[cfg.type](cfg, ingest, data_dir)
