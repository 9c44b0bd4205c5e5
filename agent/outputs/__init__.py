"""The output registry: config type → builder. Explicit, no discovery."""

from __future__ import annotations

from agent.component import Output


def _file(cfg) -> Output:
    from agent.outputs.file import FileOutput
    return FileOutput(cfg.name, cfg.path, fsync=cfg.fsync, key_style=cfg.key_style)


def _stdout(cfg) -> Output:
    from agent.outputs.stdout import StdoutOutput
    return StdoutOutput(cfg.name)


def _forward(cfg) -> Output:
    from agent.outputs.forward import ForwardOutput
    return ForwardOutput(cfg)


def _http(cfg) -> Output:
    from agent.outputs.http import HttpOutput
    return HttpOutput(cfg)


BUILDERS = {"file": _file, "stdout": _stdout, "forward": _forward, "http": _http}


def build_output(cfg) -> Output:
    return BUILDERS[cfg.type](cfg)
