"""What the agent loads at start: the modules that would cost memory in every sidecar stay out."""

from __future__ import annotations

import subprocess
import sys

LOADED = """
import sys
from agent.app import App
from agent.worker import run_delivery
from agent.config.document import load_config
cfg = load_config({config!r})
print(" ".join(sorted(sys.modules)))
"""


def loaded_by_start(config: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", LOADED.format(config=config)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def test_the_shipped_config_loads_no_http_client_no_code_lists_and_no_package_metadata():
    modules = loaded_by_start("conf/agent.toml")
    assert "pydantic" in modules and "agent.hive.purchase_log" in modules  # the config and the spec model did load
    heavy = {"aiohttp", "prometheus_client", "pycountry", "importlib.metadata", "yaml", "watchfiles", "zstandard"}
    assert not heavy & modules, heavy & modules


def test_models_still_validate_without_the_plugin_lookup():
    from pydantic import BaseModel, ValidationError

    class Probe(BaseModel):
        n: int

    assert Probe.model_validate({"n": "3"}).n == 3
    try:
        Probe.model_validate({"n": "x"})
    except ValidationError:
        return
    raise AssertionError("an invalid value was taken")
