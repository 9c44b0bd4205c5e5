"""The output registry: config type → builder. Explicit, no discovery."""

from __future__ import annotations

from agent.component import Output


def _file(cfg) -> Output:
    from agent.outputs.file import FileOutput

    return FileOutput(cfg.name, cfg.path, fsync=cfg.fsync, key_style=cfg.key_style)


def _stdout(cfg) -> Output:
    from agent.outputs.stdout import StdoutOutput

    return StdoutOutput(cfg.name, key_style=cfg.key_style)


def _forward(cfg) -> Output:
    from agent.outputs.forward import ForwardOutput

    return ForwardOutput(cfg)


def _http(cfg) -> Output:
    from agent.outputs.http import HttpOutput

    return HttpOutput(cfg)


def _appsflyer(cfg, data_dir) -> Output:
    from agent.outputs.appsflyer import AppsFlyerOutput

    return AppsFlyerOutput(cfg, data_dir)


def _wisetracker(cfg, data_dir) -> Output:
    from agent.outputs.wisetracker import WisetrackerOutput

    return WisetrackerOutput(cfg, data_dir)


def _naver(cfg, data_dir) -> Output:
    from agent.outputs.naver import NaverOutput

    return NaverOutput(cfg, data_dir)


BUILDERS = {"file": _file, "stdout": _stdout, "forward": _forward, "http": _http}
MIRRORS = {"appsflyer": _appsflyer, "wisetracker": _wisetracker, "naver": _naver}  # they keep state in data_dir


def build_output(cfg, data_dir) -> Output:
    if cfg.type in MIRRORS:
        return MIRRORS[cfg.type](cfg, data_dir)
    return BUILDERS[cfg.type](cfg)
