"""Read YAML into plain dicts and lists that remember the line of every key and item.

Pydantic reports an error as a path of keys (``("traits", 3, "count", "window")``); with the
lines recorded here we turn that path back into ``file:line``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml


class LineDict(dict):
    """A dict that knows the line (1-based) of each of its keys and of itself."""

    line: int = 0
    key_lines: dict[Any, int]


class LineList(list):
    """A list that knows the line (1-based) of each of its items and of itself."""

    line: int = 0
    item_lines: list[int]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false, so `on: entered` keeps its key."""


_LineLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_LineLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    result = LineDict()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in result:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> LineList:
    result = LineList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def load_yaml(path: Path) -> Any:
    """Parse one YAML file; raises ``yaml.YAMLError`` (with a mark) on bad syntax."""
    with open(path, encoding="utf-8") as handle:
        return yaml.load(handle, Loader=_LineLoader)


def line_of(data: Any, path: tuple[Any, ...]) -> int | None:
    """The line of the deepest element of ``path`` that exists in ``data``."""
    line = getattr(data, "line", None) or None
    node = data
    for step in path:
        if isinstance(node, LineDict) and step in node:
            line = node.key_lines.get(step, line)
            node = node[step]
        elif isinstance(node, LineList) and isinstance(step, int) and 0 <= step < len(node):
            line = node.item_lines[step]
            node = node[step]
        else:
            break
    return line
