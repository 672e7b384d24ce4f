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
        result = value.__class__()
        result.__dict__.update(getattr(value, "__dict__", {}))
        for key, item in value.items():
            result[key] = interpolate(item, environ)
        return result
    if isinstance(value, list):
        result = value.__class__(interpolate(item, environ) for item in value)
        result.__dict__.update(getattr(value, "__dict__", {}))
        return result
    return value


def references(value: Any) -> list[str]:
    """Names of the variables ``value`` refers to without a default."""
    if isinstance(value, str):
        return [m.group(1) for m in _REFERENCE.finditer(value) if m.group(2) is None]
    if isinstance(value, dict):
        return [name for item in value.values() for name in references(item)]
    if isinstance(value, list):
        return [name for item in value for name in references(item)]
    return []
