"""hive-agent: a Fluentd-compatible log agent for purchase logs."""

import os
import sys
import types

__version__ = "0.1.0"


def _without_pydantic_plugins() -> None:
    """The agent uses no pydantic plugin, so pydantic need not look for one.

    pydantic looks for plugins through ``importlib.metadata`` entry points when it builds its
    first model; that import alone (email, zipfile, csv and 40 more modules) holds 2.6 MB in
    every sidecar. This answers pydantic's one question, ``get_plugins()``, with none, as
    ``PYDANTIC_DISABLE_PLUGINS=__all__`` does, before any model is built. Someone who names
    plugins in that variable gets pydantic's own loader. tests/unit/test_footprint.py checks
    that models still build and that ``importlib.metadata`` is not loaded.
    """
    if "pydantic.plugin._loader" in sys.modules or os.environ.get("PYDANTIC_DISABLE_PLUGINS", "__all__") not in (
        "__all__",
        "1",
        "true",
    ):
        return
    loader = types.ModuleType("pydantic.plugin._loader", "hive-agent: no pydantic plugins")
    loader.get_plugins = lambda: ()  # type: ignore[attr-defined]
    sys.modules[loader.__name__] = loader


_without_pydantic_plugins()
