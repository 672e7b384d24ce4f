"""`cdp plan check` (the ingest validation over landed events) and `cdp plan infer` (a draft
plan from landed events, which must accept the data it was drawn from)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

import yaml
from click.testing import CliRunner

from cdp_warehouse.cli import main
from cdp_warehouse.collect.loader import land_messages
from cdp_warehouse.tracking.check import IDENTIFY_LABEL, check_landed
from cdp_warehouse.tracking.infer import infer_plan, plan_yaml
from cdp_warehouse.tracking.models import TrackingPlan
from cdp_warehouse.tracking.plan import load_plan
from cdp_warehouse.warehouses import connect
from tests.tracking.conftest import identified, payment, tracked

MIXED = [
    payment("p1", revenue=10, currency="USD"),
    payment("p2", revenue="10", currency="USD"),
    payment("p3", revenue=5, currency="GBP", plan="pro"),
    payment("p4", currency="EUR"),
    tracked("d1", "Dashboard Viewed", widgets=3),
    tracked("d2", "Dashboard Viewed", widgets=4),
    tracked("l1", "Login", method="sso"),
    identified("i1", email="ann@example.com", plan="pro"),
    identified("i2", email="bob", plan="gold", age=40),
    {"type": "page", "messageId": "g1", "userId": "u1", "name": "Home"},
]


def cli(ws, *args: str):
    """Run `cdp` on the workspace's project (the warehouse file is released meanwhile)."""
    ws.warehouse.close()
    try:
        return CliRunner().invoke(main, ["--project", str(ws.project.root), *args],
                                  env={"CDP_PROJECT": None, "COLUMNS": "250", "CDP_AS_OF": None})
    finally:
        ws.warehouse = connect(ws.project)


def test_check_counts_match_the_violations_recorded_at_ingest(planned):
    ws = planned(sources={"web": "flag"})
    land_messages(ws.project, ws.warehouse, MIXED, source="web")
    report = check_landed(ws.project, ws.warehouse, load_plan(ws.project))

    recorded = Counter()
    for event, message_type, violation_type in ws.query(
            "SELECT event, message_type, violation_type FROM raw.tracking_plan_violations WHERE action = 'flagged'"):
        recorded[(event if message_type == "track" else IDENTIFY_LABEL, violation_type)] += 1
    assert {key: group.count for key, group in report.groups.items()} == dict(recorded)
    assert recorded == {("Payment Processed", "wrong_type"): 1, ("Payment Processed", "not_in_enum"): 1,
                        ("Payment Processed", "unplanned_property"): 1, ("Payment Processed", "missing_required"): 1,
                        ("Dashboard Viewed", "unplanned_event"): 2, (IDENTIFY_LABEL, "invalid_format"): 1,
                        (IDENTIFY_LABEL, "not_in_enum"): 1, (IDENTIFY_LABEL, "unplanned_property"): 1}
    assert (report.checked, report.with_violations, report.violations) == (9, 6, 9)
    example = report.groups[("Dashboard Viewed", "unplanned_event")]
    assert example.example_message_id == "d1" and example.paths == {"event": 2}


def test_check_since_only_reads_newer_events(planned):
    ws = planned()
    old = {**tracked("old", "Nope"), "timestamp": "2026-01-01T00:00:00Z"}
    new = {**tracked("new", "Nope"), "timestamp": "2026-06-01T00:00:00Z"}
    land_messages(ws.project, ws.warehouse, [old, new])
    report = check_landed(ws.project, ws.warehouse, load_plan(ws.project), since=datetime(2026, 3, 1))
    assert (report.checked, report.violations) == (1, 1)


def test_cdp_plan_check_prints_a_table_and_exits_1_on_violations(planned):
    ws = planned()
    land_messages(ws.project, ws.warehouse, MIXED)
    result = cli(ws, "plan", "check")
    assert result.exit_code == 1, result.output
    assert "Dashboard Viewed" in result.output and "unplanned_event" in result.output
    assert "p2: properties.revenue = \"10\"" in result.output
    assert "checked 9 track/identify events" in result.output

    clean = cli(ws, "plan", "check", "--since", "2027-01-01")
    assert clean.exit_code == 0, clean.output
    assert "checked 0 track/identify events" in clean.output


def test_plan_commands_need_a_plan(workspace):
    ws = workspace("traits: []\n")
    result = cli(ws, "plan", "check")
    assert result.exit_code == 1 and "no tracking plan" in result.output


def test_infer_round_trips_the_data_it_came_from(workspace):
    ws = workspace("traits: []\n")
    messages = MIXED + [
        tracked(f"r{i}", "Report Generated", report_type=("usage", "custom")[i % 2], sources=i,
                ms=i * 1.5, **({"note": None} if i % 3 == 0 else {}),
                filters={"range": "30d", "count": i}, tags=["a"])
        for i in range(12)
    ]
    land_messages(ws.project, ws.warehouse, messages)
    inferred = infer_plan(ws.project, ws.warehouse)
    plan = TrackingPlan.model_validate(yaml.safe_load(plan_yaml(inferred)))

    report = check_landed(ws.project, ws.warehouse, plan)
    assert report.checked == 21 and report.violations == 0, report.groups

    report_generated = plan.events["Report Generated"].properties
    assert report_generated["report_type"].enum == ["custom", "usage"]  # few values, often repeated
    assert report_generated["report_type"].required
    assert report_generated["sources"].types == ("integer",)
    assert report_generated["ms"].types == ("number",)  # 0.0 and 1.5 alike
    assert report_generated["note"].types == ("null",) and not report_generated["note"].required
    assert report_generated["filters"].properties["count"].types == ("integer",)
    assert report_generated["tags"].types == ("array",)
    payment_props = plan.events["Payment Processed"].properties
    assert payment_props["revenue"].types == ("integer", "string") and not payment_props["revenue"].required
    assert payment_props["currency"].required and payment_props["currency"].enum is None  # too few repeats
    assert plan.identify.traits["email"].types == ("string",)
    assert plan.identify.traits["email"].format is None  # "bob" is not an email
    assert "Home" not in plan.events  # pages are not planned


def test_infer_finds_formats(workspace):
    ws = workspace("traits: []\n")
    land_messages(ws.project, ws.warehouse, [
        identified(f"i{i}", email=f"user{i}@example.com", created_at=f"2026-06-0{i + 1}T10:00:00Z",
                   website="https://acme.com") for i in range(4)])
    traits = TrackingPlan.model_validate(
        yaml.safe_load(plan_yaml(infer_plan(ws.project, ws.warehouse)))).identify.traits
    assert (traits["email"].format, traits["created_at"].format, traits["website"].format) == (
        "email", "date-time", "uri")


def test_cdp_plan_infer_writes_a_plan_that_validates(workspace, tmp_path):
    ws = workspace("traits: []\n")
    land_messages(ws.project, ws.warehouse, MIXED)
    out = ws.project.root / "tracking_plan.yaml"
    result = cli(ws, "plan", "infer", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("# Drafted by `cdp plan infer` from 9")

    cdp_yaml = ws.project.root / "cdp.yaml"
    cdp_yaml.write_text(cdp_yaml.read_text() + "tracking_plan: tracking_plan.yaml\n")
    assert cli(ws, "validate").exit_code == 0
    assert cli(ws, "plan", "check").exit_code == 0

    printed = cli(ws, "plan", "infer")
    assert printed.exit_code == 0 and "Payment Processed:" in printed.output
