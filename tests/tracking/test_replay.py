"""`cdp plan replay`: quarantined messages land once the plan (or the source's mode) lets them
through, exactly as they would have landed at ingest; nothing is lost on the way."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner

from cdp_warehouse.cli import main
from cdp_warehouse.collect.loader import land_messages, load_files
from cdp_warehouse.specs import load_project
from cdp_warehouse.tracking.plan import load_plan
from cdp_warehouse.tracking.replay import replay_quarantine
from cdp_warehouse.warehouses import connect
from tests.tracking.conftest import PLAN, identified, jsonl, payment, tracked

COLUMNS = ("message_id, type, event, user_id, anonymous_id, timestamp, received_at, sent_at, properties, "
           "traits, context, source")


def replay(ws):
    return replay_quarantine(ws.project, ws.warehouse, load_plan(ws.project))


def test_block_then_fix_the_plan_then_replay_lands_the_messages(planned, tmp_path):
    ws = planned(sources={"backend": "block"})
    messages = [payment("p1", revenue=9.5, currency="GBP"),  # GBP not planned yet
                tracked("d1", "Dashboard Viewed", widgets=3),  # event not planned yet
                identified("i1", email="nope")]  # still invalid after the fix
    load_files(ws.project, ws.warehouse, [jsonl(tmp_path / "e.jsonl", *messages)], source="backend")
    assert ws.landed() == set() and set(ws.quarantined()) == {"p1", "d1", "i1"}

    nothing = replay(ws)  # same plan: nothing changes
    assert (nothing.read, nothing.landed, nothing.kept) == (3, 0, 3)
    assert set(ws.quarantined()) == {"p1", "d1", "i1"}

    ws.plan(PLAN.replace("enum: [USD, EUR]", "enum: [USD, EUR, GBP]")
            .replace("  Login:\n", "  Login:\n  Dashboard Viewed:\n    properties:\n      widgets: {type: integer}\n"))
    result = replay(ws)
    assert (result.read, result.landed, result.kept, result.duplicates) == (3, 2, 1, 0)
    assert result.reasons == {("invalid_format", "traits.email"): 1}
    assert ws.landed() == {"p1", "d1"}
    assert set(ws.quarantined()) == {"i1"}

    again = replay(ws)  # idempotent
    assert (again.read, again.landed, again.kept) == (1, 0, 1)


def test_a_replayed_message_lands_as_it_would_have_at_ingest(planned, workspace, tmp_path):
    message = {"type": "track", "messageId": "p1", "userId": "u1", "event": "Payment Processed",
               "properties": {"revenue": 1, "currency": "GBP"}, "context": {"ip": "1.2.3.4"},
               "timestamp": "2026-06-01T12:00:00+02:00", "sentAt": "2026-06-01T12:00:01+02:00"}
    path = jsonl(tmp_path / "e.jsonl", message)
    blocked = planned(sources={"backend": "block"})
    load_files(blocked.project, blocked.warehouse, [path], source="backend")
    stamped = blocked.quarantined()["p1"]["received_at"]
    blocked.plan(PLAN.replace("enum: [USD, EUR]", "enum: [USD, EUR, GBP]"))
    replay(blocked)

    reference = workspace("traits: []\n")  # the same message, landed directly with the same clock
    land_messages(reference.project, reference.warehouse, [message], source="backend",
                  now=stamped.replace(tzinfo=UTC))
    query = f"SELECT {COLUMNS} FROM raw.events"
    assert blocked.warehouse.fetch_dicts(query) == reference.warehouse.fetch_dicts(query)


def test_switching_the_source_to_flag_releases_its_messages_with_violations_recorded(planned, tmp_path):
    ws = planned(sources={"backend": "block"})
    load_files(ws.project, ws.warehouse, [jsonl(tmp_path / "e.jsonl", payment("p1", revenue="1", currency="USD"))],
               source="backend")
    root = ws.project.root
    (root / "cdp.yaml").write_text((root / "cdp.yaml").read_text().replace("block", "flag"))
    ws.project = load_project(root, environ={})
    result = replay(ws)
    assert (result.landed, result.flagged, result.kept) == (1, 1, 0)
    assert ws.landed() == {"p1"} and ws.quarantined() == {}
    # ingest's verdict stays as history; the landing adds a flagged row
    assert ws.violations() == [("p1", "wrong_type", "properties.revenue", "blocked"),
                               ("p1", "wrong_type", "properties.revenue", "flagged")]


def test_an_id_that_landed_meanwhile_leaves_the_quarantine_as_a_duplicate(planned, tmp_path):
    ws = planned(sources={"backend": "block", "web": "flag"})
    load_files(ws.project, ws.warehouse, [jsonl(tmp_path / "a.jsonl", payment("p1", revenue="1", currency="USD"))],
               source="backend")
    fixed = payment("p1", revenue=1, currency="USD")
    load_files(ws.project, ws.warehouse, [jsonl(tmp_path / "b.jsonl", fixed)], source="web")
    result = replay(ws)
    assert (result.duplicates, result.landed, result.kept) == (1, 0, 0)
    assert ws.quarantined() == {}
    assert json.loads(ws.query("SELECT properties FROM raw.events")[0][0]) == fixed["properties"]


def test_cdp_plan_replay_prints_counts(planned, tmp_path):
    ws = planned(sources={"backend": "block"})
    load_files(ws.project, ws.warehouse, [jsonl(tmp_path / "e.jsonl", identified("i1", email="nope"))],
               source="backend")
    ws.warehouse.close()
    result = CliRunner().invoke(main, ["--project", str(ws.project.root), "plan", "replay"],
                                env={"CDP_PROJECT": None, "COLUMNS": "200"})
    ws.warehouse = connect(ws.project)
    assert result.exit_code == 0, result.output
    assert "replayed 1 quarantined messages" in result.output and "1 still blocked" in result.output
    assert "invalid_format at traits.email" in result.output


def test_a_parquet_message_survives_quarantine_unchanged(planned, workspace, tmp_path):
    """Parquet rows carry datetimes and JSON text; the quarantined copy must replay to the
    very row a direct load gives."""
    table = pa.table({
        "message_id": ["q1"], "type": ["track"], "event": ["Payment Processed"], "user_id": ["u1"],
        "timestamp": pa.array([datetime(2026, 6, 1, 10, 0, 0, 123456, tzinfo=UTC)], type=pa.timestamp("us", tz="UTC")),
        "properties": [json.dumps({"revenue": 5, "currency": "GBP"})],
    })
    path = tmp_path / "events.parquet"
    pq.write_table(table, path)
    blocked = planned(sources={"backend": "block"})
    assert load_files(blocked.project, blocked.warehouse, [path], source="backend").blocked == 1
    stamped = blocked.quarantined()["q1"]["received_at"]
    blocked.plan(PLAN.replace("enum: [USD, EUR]", "enum: [USD, EUR, GBP]"))
    assert replay(blocked).landed == 1

    reference = workspace("traits: []\n")
    load_files(reference.project, reference.warehouse, [path], source="backend")
    reference.query("UPDATE raw.events SET received_at = ?", stamped)  # the loader's clock, pinned
    query = f"SELECT {COLUMNS} FROM raw.events"
    assert blocked.warehouse.fetch_dicts(query) == reference.warehouse.fetch_dicts(query)


def test_replay_pages_through_a_large_quarantine(planned, tmp_path, monkeypatch):
    monkeypatch.setattr("cdp_warehouse.tracking.replay.BATCH_ROWS", 2)
    ws = planned(sources={"backend": "block"})
    bad = [payment(f"p{i}", revenue=i, currency="GBP") for i in range(5)] + [identified("i1", email="nope")]
    load_files(ws.project, ws.warehouse, [jsonl(tmp_path / "e.jsonl", *bad)], source="backend")
    ws.plan(PLAN.replace("enum: [USD, EUR]", "enum: [USD, EUR, GBP]"))
    result = replay(ws)
    assert (result.read, result.landed, result.kept) == (6, 5, 1)
    assert ws.landed() == {f"p{i}" for i in range(5)} and set(ws.quarantined()) == {"i1"}
