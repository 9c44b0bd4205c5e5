"""Reading either kind of file, and writing the translation as TOML with what was left out."""

from __future__ import annotations

from pathlib import Path

import tomli_w

from agent.convert import fluentbit, fluentd, source
from agent.convert.model import ConvertError
from agent.convert.translate import Translation
from agent.convert.translate_fluentbit import from_fluentbit
from agent.convert.translate_fluentd import from_fluentd


def kind_of(path: Path) -> str:
    """ "fluentd" or "fluent-bit", from the name and the first sections."""
    if path.suffix.lower() in (".yaml", ".yml"):
        return "fluent-bit"
    for line in source.head(path).splitlines():
        line = line.strip().lower()
        if line.startswith(("<source", "<match", "<filter", "<system", "@include", "<label")):
            return "fluentd"
        if line.startswith(("[input]", "[output]", "[filter]", "[service]", "@include", "@set")):
            return "fluent-bit"
    raise ConvertError(f"{path}: neither a Fluentd config (<source>, <match>) nor a Fluent Bit one ([INPUT], [OUTPUT])")


def convert(path: Path, data_dir: str) -> tuple[str, Translation]:
    kind = kind_of(path)
    t = from_fluentd(fluentd.read(path)) if kind == "fluentd" else from_fluentbit(fluentbit.read(path))
    header = [f"# hive-agent config converted from the {kind} config {path}."]
    header += ["# Check it with: hive-agent check -c FILE"]
    if t.notes:
        header += ["#", "# Translated, but not the same:"] + [f"#   {note}" for note in t.notes]
    if t.left_out:
        header += ["#", "# Left out (not translated):"] + [f"#   {item}" for item in t.left_out]
    return "\n".join(header) + "\n\n" + tomli_w.dumps(t.document(data_dir)), t
