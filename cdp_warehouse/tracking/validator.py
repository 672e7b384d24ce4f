"""Check one message against a tracking plan; the plan is compiled once into closures so that
checking a million landed events takes seconds.

What is checked (and why):

* ``track``: the event must be planned (``unplanned_event``), then its ``properties`` are
  checked against the event's schema;
* ``identify``: its ``traits`` against ``identify.traits``;
* ``page``, ``screen``, ``group`` and ``alias`` are not checked: page and screen names come
  from URLs and app views rather than from a plan, group traits describe accounts (not the
  events a plan is about), and alias carries no payload. This is what Segment Protocols does
  for page/screen/group unless told otherwise.

Event names match exactly (Segment's are case-sensitive). Types follow JSON Schema: ``1.0``
is an integer, ``true`` is never a number, ``null`` is only of type ``null`` (write
``type: [string, null]`` to allow it), and a ``required`` key holding ``null`` is present.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from cdp_warehouse.tracking.formats import FORMATS
from cdp_warehouse.tracking.models import PropertySchema, TrackingPlan, is_json_type

VIOLATION_TYPES = ("unplanned_event", "missing_required", "wrong_type", "not_in_enum",
                   "invalid_format", "unplanned_property")
CHECKED_TYPES = ("track", "identify")


class Violation(NamedTuple):
    """One way a message breaks the plan: ``path`` like ``properties.revenue``; ``value`` is the
    offending value (None for a missing key)."""

    violation_type: str
    path: str
    value: Any


Check = Callable[[Any, str, list[Violation]], None]
ObjectCheck = Callable[[Mapping[str, Any], str, list[Violation]], None]


def _enum_key(value: Any) -> Any:
    """Equality as JSON has it: ``true`` is not ``1``, ``1`` is ``1.0``; lists and objects by
    content."""
    if isinstance(value, bool):
        return ("boolean", value)
    if isinstance(value, (int, float)):
        return ("number", value)
    if isinstance(value, (dict, list)):
        return ("json", json.dumps(value, sort_keys=True))
    return (type(value).__name__, value)


def _type_check(types: tuple[str, ...]) -> Callable[[Any], bool] | None:
    if not types:
        return None
    if types == ("string",):  # by far the most common: skip the generic loop
        return lambda value: isinstance(value, str)
    return lambda value: any(is_json_type(value, json_type) for json_type in types)


def compile_property(schema: PropertySchema) -> Check:
    """A function ``check(value, path, out)`` appending the violations of one value."""
    of_type = _type_check(schema.types)
    allowed = frozenset(_enum_key(value) for value in schema.enum) if schema.enum is not None else None
    valid_format = FORMATS[schema.format] if schema.format else None
    children = compile_object(schema.properties, schema.additional_properties)
    items = compile_property(schema.items) if schema.items is not None else None

    def check(value: Any, path: str, out: list[Violation]) -> None:
        if of_type is not None and not of_type(value):
            out.append(Violation("wrong_type", path, value))
            return  # a wrong type makes the other constraints meaningless
        if allowed is not None and _enum_key(value) not in allowed:
            out.append(Violation("not_in_enum", path, value))
            return
        if valid_format is not None and isinstance(value, str) and not valid_format(value):
            out.append(Violation("invalid_format", path, value))
        if children is not None and isinstance(value, dict):
            children(value, path, out)
        if items is not None and isinstance(value, list):
            for index, item in enumerate(value):
                items(item, f"{path}[{index}]", out)

    return check


def compile_object(properties: Mapping[str, PropertySchema] | None, additional: bool) -> ObjectCheck | None:
    """A function ``check(obj, prefix, out)`` for an object's keys; None when the object's
    keys are not planned (anything goes)."""
    if properties is None:
        return None
    checks = {name: compile_property(schema) for name, schema in properties.items()}
    required = tuple(name for name, schema in properties.items() if schema.required)

    def check(obj: Mapping[str, Any], prefix: str, out: list[Violation]) -> None:
        for name in required:
            if name not in obj:
                out.append(Violation("missing_required", f"{prefix}.{name}", None))
        for name, value in obj.items():
            check_value = checks.get(name)
            if check_value is not None:
                check_value(value, f"{prefix}.{name}", out)
            elif not additional:
                out.append(Violation("unplanned_property", f"{prefix}.{name}", value))

    return check


def payload(value: Any) -> Mapping[str, Any]:
    """``properties``/``traits`` as a dict, whether given as one or as JSON text (landed rows,
    Parquet exports)."""
    if value is None:
        return {}
    if isinstance(value, str):
        value = json.loads(value) if value else {}
    return value if isinstance(value, Mapping) else {}


class PlanValidator:
    """A tracking plan compiled for checking many messages."""

    def __init__(self, plan: TrackingPlan) -> None:
        self.plan = plan
        self.events: dict[str, ObjectCheck | None] = {
            name: compile_object(schema.properties, schema.additional_properties)
            for name, schema in plan.events.items()
        }
        identify = plan.identify
        self.identify = (compile_object(identify.traits, identify.additional_properties)
                         if identify is not None else None)

    def check(self, message_type: str | None, event: str | None, data: Any) -> list[Violation]:
        """Violations of one message given its type, event name and properties (track) or
        traits (identify), as a dict or JSON text."""
        out: list[Violation] = []
        if message_type == "track":
            if event not in self.events:
                out.append(Violation("unplanned_event", "event", event))
                return out
            check = self.events[event]
            if check is not None:
                check(payload(data), "properties", out)
        elif message_type == "identify" and self.identify is not None:
            self.identify(payload(data), "traits", out)
        return out

    def validate(self, message: Mapping[str, Any]) -> list[Violation]:
        """Violations of a Segment message or a landing-table row (same keys for what matters)."""
        message_type = message.get("type")
        if message_type == "track":
            return self.check("track", message.get("event"), message.get("properties"))
        if message_type == "identify":
            return self.check("identify", None, message.get("traits"))
        return []


def validate(plan: TrackingPlan, message: Mapping[str, Any]) -> list[Violation]:
    """Violations of one message (compile a :class:`PlanValidator` to check many)."""
    return PlanValidator(plan).validate(message)
