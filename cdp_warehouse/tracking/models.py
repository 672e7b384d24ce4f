"""The shape of ``tracking_plan.yaml`` as frozen pydantic models.

A Protocols-style plan: per event a JSON-Schema-like description of its properties, the
traits of identify calls, and the default enforcement ``mode``::

    mode: flag                       # allow | flag | block (a source's tracking_plan_mode wins)
    events:
      Payment Processed:
        properties:
          revenue: {type: number, required: true}
          currency: {type: string, enum: [USD, EUR]}
      Login:                         # planned, properties not checked
    identify:
      traits:
        email: {type: string, format: email}

Unknown keys are errors, as everywhere in the project, so ``requried: true`` is caught.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    field_validator,
    model_validator,
)

Mode = Literal["allow", "flag", "block"]
JsonType = Literal["string", "number", "integer", "boolean", "object", "array", "null"]
Format = Literal["email", "date-time", "date", "uri", "uuid"]


def _type_list(value: Any) -> Any:
    """``type: string`` or ``type: [string, null]`` → a list of names. YAML reads an unquoted
    ``null`` as None: it means the JSON type null."""
    if value is None:
        return ["null"]
    if isinstance(value, list):
        return ["null" if item is None else item for item in value]
    return [value]


class _PlanSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PropertySchema(_PlanSpec):
    """One property (or trait): its JSON type(s) and the constraints on its value."""

    # Always a tuple (a single name is wrapped): a `str | list` union would report a bad name twice.
    type: Annotated[tuple[JsonType, ...] | None, BeforeValidator(_type_list)] = None
    required: StrictBool = False
    enum: list[Any] | None = None
    format: Format | None = None
    description: str | None = None
    # Nested objects and arrays: the same schema one level down.
    properties: dict[str, PropertySchema] | None = None
    additional_properties: StrictBool = False
    items: PropertySchema | None = None

    @property
    def types(self) -> tuple[str, ...]:
        """The allowed JSON types; empty when any type is allowed."""
        return self.type or ()

    @model_validator(mode="after")
    def _consistent(self) -> PropertySchema:
        types = self.types
        if self.type is not None and not self.type:
            raise ValueError("`type` is an empty list; give at least one type or leave it out")
        if self.enum is not None:
            if not self.enum:
                raise ValueError("`enum` is empty, so no value could pass; list the allowed values")
            wrong = [value for value in self.enum if types and not any(is_json_type(value, t) for t in types)]
            if wrong:
                raise ValueError(f"enum value {wrong[0]!r} is not of type {' or '.join(types)}")
        if self.format is not None and types and "string" not in types:
            raise ValueError(f"`format` applies to strings; this property is {' or '.join(types)}")
        if self.properties is not None and types and "object" not in types:
            raise ValueError("nested `properties` need `type: object`")
        if self.items is not None and types and "array" not in types:
            raise ValueError("`items` needs `type: array`")
        return self


class EventSchema(_PlanSpec):
    """One planned track event. Without ``properties`` its properties are not checked; with
    them, properties not listed are ``unplanned_property`` unless ``additional_properties``."""

    description: str | None = None
    properties: dict[str, PropertySchema] | None = None
    additional_properties: StrictBool = False


class IdentifySchema(_PlanSpec):
    """The traits of identify calls, checked like an event's properties."""

    description: str | None = None
    traits: dict[str, PropertySchema] | None = None
    additional_properties: StrictBool = False


class TrackingPlan(_PlanSpec):
    """``tracking_plan.yaml``."""

    description: str | None = None
    # flag by default: a plan that records but never drops data is the safe first step.
    mode: Mode = "flag"
    events: dict[str, EventSchema] = Field(default_factory=dict)
    identify: IdentifySchema | None = None

    @field_validator("events", mode="before")
    @classmethod
    def _bare_events(cls, value: Any) -> Any:
        # `Login:` with nothing under it plans the event without checking its properties.
        if isinstance(value, dict):
            return {name: {} if schema is None else schema for name, schema in value.items()}
        return value


def is_json_type(value: Any, json_type: str) -> bool:
    """Whether ``value`` (parsed JSON) is of ``json_type``, as JSON Schema defines it."""
    if json_type == "string":
        return isinstance(value, str)
    if json_type == "boolean":
        return isinstance(value, bool)
    if json_type == "null":
        return value is None
    if json_type == "object":
        return isinstance(value, dict)
    if json_type == "array":
        return isinstance(value, list)
    if isinstance(value, bool):  # True is an int in Python, never a number in JSON
        return False
    if json_type == "integer":
        return isinstance(value, int) or isinstance(value, float) and value.is_integer()
    return isinstance(value, (int, float))  # number
