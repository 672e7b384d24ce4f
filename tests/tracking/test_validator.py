"""The validator: one message against a plan → violations with their path and offending value.
No warehouse needed: the plan is parsed from inline YAML."""

from __future__ import annotations

import json
import textwrap

import pytest
import yaml

from cdp_warehouse.tracking.models import TrackingPlan
from cdp_warehouse.tracking.validator import PlanValidator, Violation, validate
from tests.tracking.conftest import PLAN, identified, payment, tracked


def plan_of(text: str) -> TrackingPlan:
    return TrackingPlan.model_validate(yaml.safe_load(textwrap.dedent(text)))


@pytest.fixture
def validator() -> PlanValidator:
    return PlanValidator(plan_of(PLAN))


def test_a_message_that_follows_the_plan_has_no_violation(validator):
    assert validator.validate(payment("m1", revenue=12.5, currency="USD")) == []
    assert validator.validate(payment("m1", revenue=12, currency="EUR", coupon=None)) == []
    assert validator.validate(identified("i1", email="ann@example.com", plan="pro")) == []


def test_unplanned_event(validator):
    assert validator.validate(tracked("m1", "Dashboard Viewed", widgets=3)) == [
        Violation("unplanned_event", "event", "Dashboard Viewed")]


def test_event_names_match_exactly(validator):
    assert validator.validate(tracked("m1", "payment processed"))[0].violation_type == "unplanned_event"


def test_missing_required(validator):
    assert validator.validate(payment("m1", revenue=10)) == [
        Violation("missing_required", "properties.currency", None)]


def test_wrong_type_keeps_the_offending_value(validator):
    assert validator.validate(payment("m1", revenue="12.00", currency="USD")) == [
        Violation("wrong_type", "properties.revenue", "12.00")]


@pytest.mark.parametrize("value, ok", [(True, False), (None, False), (3, True), (2.5, True), ([1], False)])
def test_number_is_json_number_not_boolean_or_null(validator, value, ok):
    violations = validator.validate(payment("m1", revenue=value, currency="USD"))
    assert (violations == []) is ok, violations


def test_integer_accepts_whole_floats_like_json_schema():
    validator = PlanValidator(plan_of("events:\n  A:\n    properties:\n      n: {type: integer}\n"))
    assert validator.validate(tracked("m1", "A", n=3.0)) == []
    assert validator.validate(tracked("m1", "A", n=3.5)) == [Violation("wrong_type", "properties.n", 3.5)]
    assert validator.validate(tracked("m1", "A", n=False))[0].violation_type == "wrong_type"


def test_not_in_enum(validator):
    assert validator.validate(payment("m1", revenue=1, currency="GBP")) == [
        Violation("not_in_enum", "properties.currency", "GBP")]


def test_enum_compares_like_json_true_is_not_one():
    validator = PlanValidator(plan_of("events:\n  A:\n    properties:\n      n: {enum: [1, 2]}\n"))
    assert validator.validate(tracked("m1", "A", n=1.0)) == []
    assert validator.validate(tracked("m1", "A", n=True)) == [Violation("not_in_enum", "properties.n", True)]


def test_unplanned_property(validator):
    assert validator.validate(payment("m1", revenue=1, currency="USD", plan="pro")) == [
        Violation("unplanned_property", "properties.plan", "pro")]


def test_additional_properties_allows_unplanned_ones():
    plan = plan_of("events:\n  A:\n    additional_properties: true\n    properties:\n      n: {type: integer}\n")
    assert PlanValidator(plan).validate(tracked("m1", "A", n=1, extra="x")) == []


def test_an_event_without_properties_key_does_not_check_them(validator):
    assert validator.validate(tracked("m1", "Login", method="sso", anything=[1, 2])) == []


@pytest.mark.parametrize("fmt, good, bad", [
    ("email", "ann@example.com", "ann at example"),
    ("date-time", "2026-06-01T10:00:00Z", "2026-13-01T10:00:00Z"),
    ("date-time", "2026-06-01T10:00:00.5+02:00", "yesterday"),
    ("uri", "https://acme.com/x?y=1", "acme dot com"),
    ("date", "2026-06-01", "06/01/2026"),
    ("uuid", "0e4a3a34-9a4e-4b61-9d38-6b1b1c1f2f55", "not-a-uuid"),
])
def test_invalid_format(fmt, good, bad):
    validator = PlanValidator(plan_of(f"events:\n  A:\n    properties:\n      v: {{type: string, format: {fmt}}}\n"))
    assert validator.validate(tracked("m1", "A", v=good)) == []
    assert validator.validate(tracked("m1", "A", v=bad)) == [Violation("invalid_format", "properties.v", bad)]


def test_identify_checks_traits(validator):
    found = validator.validate(identified("i1", email="not-an-email", plan="gold", age=40))
    assert found == [Violation("invalid_format", "traits.email", "not-an-email"),
                     Violation("not_in_enum", "traits.plan", "gold"),
                     Violation("unplanned_property", "traits.age", 40)]


@pytest.mark.parametrize("message", [
    {"type": "page", "messageId": "p1", "userId": "u1", "name": "Pricing", "properties": {"x": 1}},
    {"type": "screen", "messageId": "s1", "userId": "u1", "name": "Home"},
    {"type": "group", "messageId": "g1", "userId": "u1", "groupId": "g", "traits": {"email": 5}},
    {"type": "alias", "messageId": "a1", "userId": "u1", "previousId": "x"},
])
def test_page_screen_group_and_alias_are_not_checked(validator, message):
    assert validator.validate(message) == []


def test_without_identify_section_identify_is_not_checked():
    validator = PlanValidator(plan_of("events:\n  A:\n"))
    assert validator.validate(identified("i1", anything="goes")) == []


def test_nested_objects_and_arrays_report_full_paths():
    plan = plan_of("""\
        events:
          Order Completed:
            properties:
              address:
                type: object
                properties:
                  city: {type: string, required: true}
              items:
                type: array
                items:
                  type: object
                  properties:
                    sku: {type: string, required: true}
                    qty: {type: integer}
        """)
    message = tracked("m1", "Order Completed", address={"zip": "1000"},
                      items=[{"sku": "a", "qty": 1}, {"qty": "two"}])
    assert PlanValidator(plan).validate(message) == [
        Violation("missing_required", "properties.address.city", None),
        Violation("unplanned_property", "properties.address.zip", "1000"),
        Violation("missing_required", "properties.items[1].sku", None),
        Violation("wrong_type", "properties.items[1].qty", "two"),
    ]


def test_landing_rows_with_json_text_are_checked_the_same(validator):
    row = {"message_id": "m1", "type": "track", "event": "Payment Processed",
           "properties": json.dumps({"revenue": "1", "currency": "USD"}), "traits": None}
    assert validator.validate(row) == [Violation("wrong_type", "properties.revenue", "1")]
    row = {"message_id": "i1", "type": "identify", "event": None, "properties": None,
           "traits": json.dumps({"plan": "gold"})}
    assert validator.validate(row) == [Violation("not_in_enum", "traits.plan", "gold")]


def test_validate_shortcut_compiles_the_plan():
    assert validate(plan_of(PLAN), payment("m1", revenue=1)) == [
        Violation("missing_required", "properties.currency", None)]
