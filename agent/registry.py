"""Every component type the config can name: its config model and how to build it.

Adding an input, a filter or an output is one module (its config model beside
its code, and a ``build`` function) and one line here. The config document
(agent/config/document.py) builds its unions from these tables; the app and the delivery
process build components through them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from agent.component import Filter, Input, Output
from agent.config.types import ComponentConfig
from agent.filters import hive, record_transformer
from agent.ingest import Ingest
from agent.inputs import forward as forward_input
from agent.inputs import tail
from agent.outputs import appsflyer, file, http, naver, stdout, wisetracker
from agent.outputs import forward as forward_output

# How each kind is built; ``Any`` is the type's own config model (``config`` beside it).
BuildInput = Callable[[Any, Ingest, Path], Input]  # (cfg, ingest, data_dir)
BuildFilter = Callable[[Any, Path], Filter]  # (cfg, data_dir)
BuildOutput = Callable[[Any, Path], Output]  # (cfg, data_dir)
B = TypeVar("B", BuildInput, BuildFilter, BuildOutput)


@dataclass(frozen=True, slots=True)
class Registered(Generic[B]):
    config: type[ComponentConfig]
    build: B


INPUTS: dict[str, Registered[BuildInput]] = {
    "forward": Registered(forward_input.ForwardInputConfig, forward_input.build),
    "tail": Registered(tail.TailInputConfig, tail.build),
}

FILTERS: dict[str, Registered[BuildFilter]] = {
    "record_transformer": Registered(record_transformer.RecordTransformerConfig, record_transformer.build),
    "hive": Registered(hive.HiveFilterConfig, hive.build),
}

OUTPUTS: dict[str, Registered[BuildOutput]] = {
    "file": Registered(file.FileOutputConfig, file.build),
    "stdout": Registered(stdout.StdoutOutputConfig, stdout.build),
    "forward": Registered(forward_output.ForwardOutputConfig, forward_output.build),
    "http": Registered(http.HttpOutputConfig, http.build),
    "appsflyer": Registered(appsflyer.AppsFlyerOutputConfig, appsflyer.build),
    "wisetracker": Registered(wisetracker.WisetrackerOutputConfig, wisetracker.build),
    "naver": Registered(naver.NaverOutputConfig, naver.build),
}
