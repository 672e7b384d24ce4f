"""``${VAR}`` and ``${VAR:-default}`` in cdp.yaml values."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class MissingEnvVar(KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def interpolate(value: Any, environ: Mapping[str, str]) -> Any:
    """Replace references in every string inside ``value`` (dicts and lists are rebuilt with
    the same class, so YAML line information survives). Raises MissingEnvVar."""
    if isinstance(value, str):
        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in environ and environ[name] != "":
                return environ[name]
            if default is not None:
                return default
            raise MissingEnvVar(name)

        return _REFERENCE.sub(substitute, value)
    if isinstance(value, dict):
        result = _same_kind(value, {key: interpolate(item, environ) for key, item in value.items()})
        return result
    if isinstance(value, list):
        return _same_kind(value, [interpolate(item, environ) for item in value])
    return value


def _same_kind(original: Any, items: Any) -> Any:
    """``items`` as the class of ``original``, keeping its attributes (YAML line numbers)."""
    if type(original) in (dict, list):
        return items
    result = original.__class__(items)
    result.__dict__.update(original.__dict__)
    return result


def missing(value: Any, environ: Mapping[str, str], path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], str]]:
    """(key path, variable) for every reference in ``value`` that is unset and has no default."""
    if isinstance(value, str):
        return [(path, name) for name in references(value) if not environ.get(name)]
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in missing(item, environ, path + (key,))]
    if isinstance(value, list):
        return [found for index, item in enumerate(value) for found in missing(item, environ, path + (index,))]
    return []


def references(value: Any) -> list[str]:
    """Names of the variables ``value`` refers to without a default."""
    if isinstance(value, str):
        return [m.group(1) for m in _REFERENCE.finditer(value) if m.group(2) is None]
    if isinstance(value, dict):
        return [name for item in value.values() for name in references(item)]
    if isinstance(value, list):
        return [name for item in value for name in references(item)]
    return []
