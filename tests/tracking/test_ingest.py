"""Enforcement at ingest (`cdp load`, and the collector through land_messages): each source's
mode — allow lands and records nothing, flag lands and records, block quarantines — on a real
DuckDB file."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cdp_warehouse.cli import main
from cdp_warehouse.collect.loader import land_messages, load_files
from cdp_warehouse.errors import SpecError
from cdp_warehouse.tracking.models import TrackingPlan
from cdp_warehouse.warehouses import connect
from tests.tracking.conftest import PLAN, identified, jsonl, payment, tracked

GOOD = payment("good", revenue=10, currency="USD")
BAD_TYPE = payment("bad-type", revenue="10", currency="USD")
UNPLANNED = tracked("unplanned", "Dashboard Viewed", widgets=3)
BAD_TRAIT = identified("bad-trait", email="nope")
PAGE = {"type": "page", "messageId": "page", "userId": "u1", "name": "Pricing", "properties": {"any": 1}}
MESSAGES = (GOOD, BAD_TYPE, UNPLANNED, BAD_TRAIT, PAGE)
ALL_IDS = {"good", "bad-type", "unplanned", "bad-trait", "page"}


@pytest.fixture
def events_file(tmp_path):
    return jsonl(tmp_path / "events.jsonl", *MESSAGES)


def test_flag_lands_everything_and_records_each_violation(planned, events_file):
    ws = planned(sources={"web": "flag"})
    result = load_files(ws.project, ws.warehouse, [events_file], source="web")
    assert (result.inserted, result.flagged, result.blocked, result.violations) == (5, 3, 0, 3)
    assert ws.landed() == ALL_IDS
    assert ws.violations() == [
        ("bad-trait", "invalid_format", "traits.email", "flagged"),
        ("bad-type", "wrong_type", "properties.revenue", "flagged"),
        ("unplanned", "unplanned_event", "event", "flagged"),
    ]
    row = ws.warehouse.fetch_dicts("SELECT * FROM raw.tracking_plan_violations WHERE message_id = 'bad-type'")[0]
    assert (row["source"], row["message_type"], row["event"]) == ("web", "track", "Payment Processed")
    assert json.loads(row["value"]) == "10"  # the offending value, with its JSON type
    assert row["detected_at"] is not None
    assert ws.quarantined() == {}


def test_block_lands_only_clean_messages_and_quarantines_the_rest(planned, events_file):
    ws = planned(sources={"backend": "block"})
    result = load_files(ws.project, ws.warehouse, [events_file], source="backend")
    assert (result.inserted, result.blocked, result.duplicates) == (2, 3, 0)
    assert ws.landed() == {"good", "page"}
    quarantined = ws.quarantined()
    assert set(quarantined) == {"bad-type", "unplanned", "bad-trait"}
    held = quarantined["bad-type"]
    assert json.loads(held["message"]) == BAD_TYPE  # the original message, unchanged
    assert json.loads(held["reasons"]) == [{"violation_type": "wrong_type", "path": "properties.revenue", "value": "10"}]
    assert (held["source"], held["event"], held["origin"]) == ("backend", "Payment Processed", f"{events_file}:2")
    assert {action for *_, action in ws.violations()} == {"blocked"}


def test_allow_lands_everything_and_records_nothing(planned, events_file):
    ws = planned(sources={"partner": "allow"})
    result = load_files(ws.project, ws.warehouse, [events_file], source="partner")
    assert (result.inserted, result.flagged, result.blocked) == (5, 0, 0)
    assert ws.landed() == ALL_IDS
    assert not ws.warehouse.table_exists("raw", "tracking_plan_violations") or ws.violations() == []


def test_a_source_not_under_sources_gets_the_plans_mode(planned, events_file):
    ws = planned(PLAN.replace("mode: flag", "mode: block"), sources={"web": "flag"})
    result = load_files(ws.project, ws.warehouse, [events_file])  # source "load", cdp load's default
    assert result.blocked == 3
    assert ws.landed() == {"good", "page"}


def test_the_source_mode_overrides_the_plans_mode(planned, events_file):
    ws = planned(PLAN.replace("mode: flag", "mode: block"), sources={"web": "flag"})
    assert load_files(ws.project, ws.warehouse, [events_file], source="web").blocked == 0
    assert ws.landed() == ALL_IDS


def test_without_a_plan_nothing_is_checked(workspace, tmp_path):
    ws = workspace("traits: []\n")
    result = load_files(ws.project, ws.warehouse, [jsonl(tmp_path / "e.jsonl", *MESSAGES)])
    assert (result.inserted, result.flagged, result.blocked) == (5, 0, 0)
    assert not ws.warehouse.table_exists("raw", "tracking_plan_violations")


@pytest.mark.parametrize("mode", ["flag", "block"])
def test_loading_the_same_file_twice_adds_no_violation_or_quarantine_row(planned, events_file, mode):
    ws = planned(sources={"web": mode})
    load_files(ws.project, ws.warehouse, [events_file], source="web")
    before = (ws.violations(), ws.query("SELECT count(*) FROM raw.quarantined_messages"), ws.landed())
    again = load_files(ws.project, ws.warehouse, [events_file], source="web")
    assert (ws.violations(), ws.query("SELECT count(*) FROM raw.quarantined_messages"), ws.landed()) == before
    assert again.inserted == 0


def test_a_later_copy_of_a_landed_id_is_not_judged(planned, tmp_path):
    """The first copy wins: a second copy with the same id and different content must neither
    add violations to the landed message nor be quarantined."""
    ws = planned(sources={"web": "block"})
    load_files(ws.project, ws.warehouse, [jsonl(tmp_path / "a.jsonl", payment("m1", revenue=1, currency="USD"))],
               source="web")
    result = load_files(ws.project, ws.warehouse, [jsonl(tmp_path / "b.jsonl", payment("m1", revenue="oops"))],
                        source="web")
    assert (result.inserted, result.duplicates, result.blocked) == (0, 1, 0)
    assert ws.violations() == [] and ws.quarantined() == {}


def test_within_one_batch_the_first_copy_is_judged(planned):
    ws = planned(sources={"web": "block"})
    result = land_messages(ws.project, ws.warehouse, [payment("m1", revenue="x", currency="USD"),
                                                      payment("m1", revenue=1, currency="USD")], source="web")
    assert (result.inserted, result.blocked, result.duplicates) == (0, 1, 1)
    assert json.loads(ws.quarantined()["m1"]["message"])["properties"]["revenue"] == "x"


def test_land_messages_takes_an_explicit_plan(planned):
    """The collector may pin the plan it started with."""
    ws = planned(sources={"web": "block"})
    only_login = TrackingPlan.model_validate({"events": {"Login": None}})
    result = land_messages(ws.project, ws.warehouse, [GOOD, tracked("l1", "Login")], source="web",
                           tracking_plan=only_login)
    assert result.blocked == 1 and ws.landed() == {"l1"}


def test_parquet_style_json_text_properties_are_checked(planned):
    ws = planned(sources={"web": "flag"})
    message = {**BAD_TYPE, "properties": json.dumps(BAD_TYPE["properties"])}
    land_messages(ws.project, ws.warehouse, [message], source="web")
    assert ws.violations() == [("bad-type", "wrong_type", "properties.revenue", "flagged")]


def test_cdp_load_applies_the_mode_of_source(planned, events_file):
    ws = planned(sources={"backend": "block"})
    ws.warehouse.close()  # the CLI opens the file itself
    result = CliRunner().invoke(main, ["--project", str(ws.project.root), "load", str(events_file),
                                       "--source", "backend"], env={"CDP_PROJECT": None})
    assert result.exit_code == 0, result.output
    ws.warehouse = connect(ws.project)
    assert ws.landed() == {"good", "page"}
    assert set(ws.quarantined()) == {"bad-type", "unplanned", "bad-trait"}


def test_a_plan_broken_after_loading_the_project_fails_before_writing(planned, events_file):
    ws = planned(sources={"web": "block"})
    ws.plan("events: {A: {propertes: {}}}\n")
    with pytest.raises(SpecError):
        load_files(ws.project, ws.warehouse, [events_file], source="web")
    assert ws.landed() == set()
