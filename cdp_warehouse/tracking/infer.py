"""`cdp plan infer`: draft a tracking plan from the events already landed.

The draft describes the data as it is, dirt included (a revenue sent sometimes as a string
becomes ``type: [number, string]``), so that it validates the data it came from with no
violation; reviewing it is how the dirt is found and the plan tightened. Per event and for
identify traits: every key seen, its JSON type(s), ``required`` when every message had it,
a ``format`` when every string matched one, else an ``enum`` when few distinct strings
repeat often enough to look like a closed list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml

from cdp_warehouse.specs import ResolvedProject
from cdp_warehouse.tracking.formats import FORMATS
from cdp_warehouse.tracking.landed import landed_batches
from cdp_warehouse.tracking.validator import payload
from cdp_warehouse.warehouses.base import Warehouse

ENUM_MAX_VALUES = 10
ENUM_MIN_REPEATS = 3  # each distinct value seen this often on average, or it is not a closed list
INFERRED_FORMATS = ("email", "date-time", "date", "uri")


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "null"


@dataclass
class ValueStats:
    """What was seen under one key."""

    seen: int = 0
    types: set[str] = field(default_factory=set)
    strings: set[str] | None = field(default_factory=set)  # None once past ENUM_MAX_VALUES
    formats: set[str] = field(default_factory=lambda: set(INFERRED_FORMATS))
    string_count: int = 0
    children: ObjectStats | None = None

    def observe(self, value: Any) -> None:
        self.seen += 1
        kind = _json_type(value)
        self.types.add(kind)
        if kind == "string":
            self.string_count += 1
            if self.strings is not None:
                self.strings.add(value)
                if len(self.strings) > ENUM_MAX_VALUES:
                    self.strings = None
            if self.formats:
                self.formats = {name for name in self.formats if FORMATS[name](value)}
        elif kind == "object":
            if self.children is None:
                self.children = ObjectStats()
            self.children.observe(value)

    def schema(self, parent_count: int) -> dict[str, Any]:
        types = self.types
        if {"integer", "number"} <= types:
            types = types - {"integer"}
        ordered = sorted(types, key=lambda name: (name == "null", name))
        schema: dict[str, Any] = {"type": ordered[0] if len(ordered) == 1 else ordered}
        if types == {"string"} or types == {"string", "null"}:
            fmt = next((name for name in INFERRED_FORMATS if name in self.formats), None)
            if fmt is not None and self.string_count:
                schema["format"] = fmt
            elif (self.strings is not None and self.strings
                  and self.string_count >= ENUM_MIN_REPEATS * len(self.strings)):
                schema["enum"] = sorted(self.strings) + ([None] if "null" in types else [])
        if self.children is not None and types == {"object"}:
            schema["properties"] = self.children.schema()
        if self.seen == parent_count:
            schema["required"] = True
        return schema


@dataclass
class ObjectStats:
    """What was seen in the objects of one event's properties (or of identify's traits)."""

    count: int = 0
    keys: dict[str, ValueStats] = field(default_factory=dict)

    def observe(self, obj: dict[str, Any]) -> None:
        self.count += 1
        keys = self.keys
        for key, value in obj.items():
            stats = keys.get(key)
            if stats is None:
                stats = keys[key] = ValueStats()
            stats.observe(value)

    def schema(self) -> dict[str, Any]:
        return {key: _Flow(self.keys[key].schema(self.count)) for key in sorted(self.keys)}


@dataclass
class Inferred:
    events: dict[str, ObjectStats] = field(default_factory=dict)
    identify: ObjectStats | None = None
    messages: int = 0

    def plan(self) -> dict[str, Any]:
        """The draft plan as plain data (what ``tracking_plan.yaml`` holds)."""
        plan: dict[str, Any] = {"mode": "flag", "events": {
            name: {"properties": self.events[name].schema()} for name in sorted(self.events)}}
        if self.identify is not None:
            plan["identify"] = {"traits": self.identify.schema()}
        return plan


def infer_plan(project: ResolvedProject, warehouse: Warehouse, since: datetime | None = None) -> Inferred:
    """Statistics of the landed track and identify events, ready to become a plan."""
    inferred = Inferred()
    events = inferred.events
    for batch in landed_batches(project, warehouse, since):
        for message_type, event, data in zip(batch["type"], batch["event"], batch["payload"], strict=True):
            inferred.messages += 1
            if message_type == "track":
                stats = events.get(event)
                if stats is None:
                    stats = events[event] = ObjectStats()
            else:
                if inferred.identify is None:
                    inferred.identify = ObjectStats()
                stats = inferred.identify
            stats.observe(payload(data))
    return inferred


class _Flow(dict):
    """A property schema, written on one line like the hand-written plans."""


class _PlanDumper(yaml.SafeDumper):
    pass


_PlanDumper.add_representer(
    _Flow, lambda dumper, data: dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=True))


def plan_yaml(inferred: Inferred, now: datetime | None = None) -> str:
    """The draft as YAML, with a header saying where it came from."""
    now = now or datetime.now(UTC)
    header = (f"# Drafted by `cdp plan infer` from {inferred.messages:,} landed track/identify events "
              f"on {now:%Y-%m-%d}.\n"
              "# Review it: types, `required` and `enum` describe the data as it was, dirt included.\n")
    body = yaml.dump(inferred.plan(), Dumper=_PlanDumper, sort_keys=False, allow_unicode=True, width=120)
    return header + body
