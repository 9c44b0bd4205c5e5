"""Reading the files of a config to convert, within bounds.

A config to convert is someone else's file, and its includes may name anything: a FIFO, a
device, a tree of includes that fans out (16 levels of 3 files each are 3^16 reads), a 200 MB
line, binary bytes, a YAML document whose aliases expand a few lines into gigabytes. Each file is
a regular file of UTF-8 text with lines of bounded length; a tree reads a bounded number of files
and bytes; a YAML document expands to a bounded number of nodes. Past a bound the conversion
stops with one line naming the file and the bound (``hive-agent convert`` exits 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from agent.convert.model import ConvertError
from agent.fsutil import NotReadable, read_regular

MAX_FILE_BYTES = 4 * 1024 * 1024  # td-agent.conf files are kilobytes
MAX_TOTAL_BYTES = 16 * 1024 * 1024
MAX_FILES = 512  # files read, counting each time an include reads one again
MAX_LINE_CHARS = 64 * 1024
MAX_YAML_NODES = 100_000  # after aliases are expanded


class ReadBudget:
    """What one conversion may still read."""

    def __init__(self) -> None:
        self.files = 0
        self.bytes = 0

    def text(self, path: Path) -> str:
        """The file's text, if it is a regular UTF-8 text file within the bounds."""
        self.files += 1
        if self.files > MAX_FILES:
            raise ConvertError(f"{path}: the includes read more than {MAX_FILES} files; not converted")
        data = _read_regular(path, MAX_FILE_BYTES)
        self.bytes += len(data)
        if self.bytes > MAX_TOTAL_BYTES:
            raise ConvertError(f"{path}: the includes hold more than {MAX_TOTAL_BYTES} bytes; not converted")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConvertError(f"{path}: not UTF-8 text (byte {exc.start}); not a config") from None
        if "\0" in text:
            raise ConvertError(f"{path}: holds NUL bytes; not a config")
        for number, line in enumerate(text.splitlines(), 1):
            if len(line) > MAX_LINE_CHARS:
                raise ConvertError(f"{path}:{number}: a line longer than {MAX_LINE_CHARS} characters; not a config")
        return text


def head(path: Path, size: int = 65536) -> str:
    """The first ``size`` bytes of a regular file, as text (to tell which kind of config it is)."""
    return _read_regular(path, None, size).decode("utf-8", errors="replace")


def load_yaml(path: Path, text: str) -> Any:
    """A YAML document, refused when its aliases would expand past MAX_YAML_NODES (a "billion
    laughs" of a few lines builds gigabytes once walked)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConvertError(f"{path}: not a readable YAML config: {exc}") from None
    if root is None:
        return None
    if _expanded_nodes(root) > MAX_YAML_NODES:
        raise ConvertError(f"{path}: its aliases expand past {MAX_YAML_NODES} nodes; not converted")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConvertError(f"{path}: not a readable YAML config: {exc}") from None


def _expanded_nodes(root: yaml.Node) -> int:
    """How many nodes the document has once every alias is a copy: each node counted with its
    subtree's size, computed once per node (an alias is the same node object again)."""
    sizes: dict[int, int] = {}
    expanding: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if not children_done:
            if id(node) in expanding:  # its own descendant: an alias that contains itself
                return MAX_YAML_NODES + 1
            expanding.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
            continue
        total = 1 + sum(sizes.get(id(child), 1) for child in children)
        sizes[id(node)] = min(total, MAX_YAML_NODES + 1)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return []


def _read_regular(path: Path, limit: int | None, size: int = -1) -> bytes:
    try:
        return read_regular(path, limit, size)
    except OSError as exc:
        raise ConvertError(f"{path}: cannot read it: {exc.strerror}") from None
    except NotReadable as exc:
        raise ConvertError(f"{path}: {exc}; not a config") from None
