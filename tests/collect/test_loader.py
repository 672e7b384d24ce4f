"""`cdp load`: JSONL / Parquet files of Segment-spec messages into raw.events (spec sections 1
and 7), on a real DuckDB file."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cdp_warehouse.collect.loader import load_files
from cdp_warehouse.errors import LoadError

AUDIENCES = """\
traits:
  - name: events_total
    count: {event: "*"}
"""

COLUMNS = ("message_id, type, event, user_id, anonymous_id, group_id, previous_id, timestamp, received_at, "
           "sent_at, properties, traits, context, source")


def write_jsonl(path: Path, *messages: dict | str) -> Path:
    path.write_text("".join((m if isinstance(m, str) else json.dumps(m)) + "\n" for m in messages))
    return path


@pytest.fixture
def ws(workspace):
    return workspace(AUDIENCES)


def load(ws, *paths: Path, **kwargs):
    return load_files(ws.project, ws.warehouse, list(paths), **kwargs)


def events(ws) -> dict[str, dict]:
    """message_id → landed row."""
    rows = ws.warehouse.fetch_dicts(f"SELECT {COLUMNS} FROM raw.events")
    return {row["message_id"]: row for row in rows}


def rejected(ws) -> list[tuple]:
    return ws.query("SELECT origin, reason, message FROM raw.rejected_messages ORDER BY origin")


def as_json(value):
    return None if value is None else json.loads(value) if isinstance(value, str) else value


def naive(text: str) -> datetime:
    return datetime.fromisoformat(text)


# ---------------------------------------------------------------- JSONL (camelCase)


def test_camel_case_jsonl_lands_every_column(ws, tmp_path):
    path = write_jsonl(
        tmp_path / "events.jsonl",
        {"type": "track", "messageId": "m1", "userId": "u1", "anonymousId": "a1", "event": "Order Completed",
         "properties": {"total": 19.99, "currency": "EUR"}, "context": {"ip": "1.2.3.4", "traits": {"email": "x@y.z"}},
         "timestamp": "2026-06-01T10:00:00Z", "receivedAt": "2026-06-01T10:00:01Z"},
        {"type": "identify", "messageId": "m2", "userId": "u1", "traits": {"plan": "pro", "seats": 3},
         "timestamp": "2026-06-01T11:00:00Z"},
        {"type": "group", "messageId": "m3", "userId": "u1", "groupId": "g1", "traits": {"name": "Acme"},
         "timestamp": "2026-06-01T12:00:00Z"},
        {"type": "alias", "messageId": "m4", "userId": "u1", "previousId": "a1", "timestamp": "2026-06-01T13:00:00Z"},
        {"type": "screen", "messageId": "m5", "anonymousId": "a2", "name": "Home", "timestamp": "2026-06-01T14:00:00Z"},
    )
    result = load(ws, path, source="web")
    assert (result.read, result.inserted, result.duplicates, result.rejected) == (5, 5, 0, 0)
    rows = events(ws)
    assert set(rows) == {"m1", "m2", "m3", "m4", "m5"}

    track = rows["m1"]
    assert (track["type"], track["event"], track["user_id"], track["anonymous_id"]) == ("track", "Order Completed", "u1", "a1")
    assert as_json(track["properties"]) == {"total": 19.99, "currency": "EUR"}
    assert as_json(track["context"]) == {"ip": "1.2.3.4", "traits": {"email": "x@y.z"}}
    assert track["timestamp"] == naive("2026-06-01T10:00:00")
    assert track["received_at"] == naive("2026-06-01T10:00:01")
    assert track["source"] == "web"

    identify = rows["m2"]
    assert identify["event"] is None
    assert as_json(identify["traits"]) == {"plan": "pro", "seats": 3}

    group = rows["m3"]
    assert group["group_id"] == "g1" and group["event"] is None

    alias = rows["m4"]
    assert (alias["user_id"], alias["previous_id"]) == ("u1", "a1")

    screen = rows["m5"]
    assert (screen["type"], screen["event"], screen["anonymous_id"], screen["user_id"]) == ("screen", "Home", "a2", None)


def test_default_source_is_load(ws, tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", {"type": "track", "messageId": "m1", "userId": "u1", "event": "A",
                                              "timestamp": "2026-06-01T10:00:00Z"})
    load(ws, path)
    assert ws.query("SELECT source FROM raw.events") == [("load",)]


def test_snake_case_jsonl_is_accepted_too(ws, tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", {"type": "track", "message_id": "m1", "user_id": "u1",
                                              "anonymous_id": "a1", "event": "A",
                                              "timestamp": "2026-06-01T10:00:00Z",
                                              "received_at": "2026-06-01T10:00:02Z"})
    load(ws, path)
    row = events(ws)["m1"]
    assert (row["user_id"], row["anonymous_id"]) == ("u1", "a1")
    assert row["received_at"] == naive("2026-06-01T10:00:02")


def test_page_name_lands_in_event(ws, tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl",
                       {"type": "page", "messageId": "p1", "userId": "u1", "name": "Pricing",
                        "properties": {"path": "/pricing"}, "timestamp": "2026-06-01T10:00:00Z"})
    load(ws, path)
    row = events(ws)["p1"]
    assert (row["type"], row["event"]) == ("page", "Pricing")
    assert as_json(row["properties"])["path"] == "/pricing"


def test_several_files_in_one_call(ws, tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", {"type": "track", "messageId": "m1", "userId": "u1", "event": "A",
                                           "timestamp": "2026-06-01T10:00:00Z"})
    b = write_jsonl(tmp_path / "b.jsonl", {"type": "track", "messageId": "m2", "userId": "u2", "event": "B",
                                           "timestamp": "2026-06-01T10:00:00Z"})
    result = load(ws, a, b)
    assert result.inserted == 2
    assert set(events(ws)) == {"m1", "m2"}


def test_blank_lines_are_skipped(ws, tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text("\n" + json.dumps({"type": "track", "messageId": "m1", "userId": "u1", "event": "A",
                                       "timestamp": "2026-06-01T10:00:00Z"}) + "\n\n   \n")
    result = load(ws, path)
    assert (result.read, result.inserted, result.rejected) == (1, 1, 0)


def test_missing_file_is_a_load_error(ws, tmp_path):
    with pytest.raises(LoadError) as info:
        load(ws, tmp_path / "nope.jsonl")
    assert "nope.jsonl" in str(info.value)


# ---------------------------------------------------------------- Parquet


def test_parquet_with_landing_columns(ws, tmp_path):
    utc = pa.timestamp("us", tz="UTC")
    table = pa.table({
        "message_id": pa.array(["q1", "q2", "q3"]),
        "type": pa.array(["track", "identify", "page"]),
        "event": pa.array(["Order Completed", None, None]),
        "user_id": pa.array(["u1", "u2", None]),
        "anonymous_id": pa.array([None, "a2", "a3"]),
        "timestamp": pa.array([datetime(2026, 6, 1, 10, 0, 0, 123456, tzinfo=UTC),
                               datetime(2026, 6, 2, 10, 0, tzinfo=UTC),
                               datetime(2026, 6, 3, 10, 0, tzinfo=UTC)], type=utc),
        "received_at": pa.array([datetime(2026, 6, 1, 10, 0, 1, tzinfo=UTC), None, None], type=utc),
        "properties": pa.array([json.dumps({"total": 5}), None, json.dumps({"path": "/"})]),
        "traits": pa.array([None, json.dumps({"plan": "pro"}), None]),
        "context": pa.array([None, None, None], type=pa.string()),
    })
    path = tmp_path / "events.parquet"
    pq.write_table(table, path)
    result = load(ws, path)
    assert (result.read, result.inserted, result.rejected) == (3, 3, 0), result.rejections
    rows = events(ws)
    assert rows["q1"]["event"] == "Order Completed"
    assert rows["q1"]["timestamp"] == datetime(2026, 6, 1, 10, 0, 0, 123456)
    assert rows["q1"]["received_at"] == datetime(2026, 6, 1, 10, 0, 1)
    assert as_json(rows["q1"]["properties"]) == {"total": 5}
    assert as_json(rows["q2"]["traits"]) == {"plan": "pro"}
    assert rows["q2"]["user_id"] == "u2" and rows["q2"]["anonymous_id"] == "a2"
    assert rows["q3"]["type"] == "page" and rows["q3"]["anonymous_id"] == "a3"

    again = load(ws, path)
    assert (again.inserted, again.duplicates) == (0, 3)


def test_parquet_with_naive_timestamps_is_utc(ws, tmp_path):
    table = pa.table({
        "message_id": ["q1"], "type": ["track"], "event": ["A"], "user_id": ["u1"],
        "timestamp": pa.array([datetime(2026, 6, 1, 10, 0)], type=pa.timestamp("us")),
    })
    path = tmp_path / "naive.parquet"
    pq.write_table(table, path)
    load(ws, path)
    assert events(ws)["q1"]["timestamp"] == datetime(2026, 6, 1, 10, 0)


def test_unreadable_parquet_is_a_load_error(ws, tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(LoadError):
        load(ws, path)


# ---------------------------------------------------------------- idempotence


def test_loading_the_same_file_twice_lands_each_message_once(ws, tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", *(
        {"type": "track", "messageId": f"m{i}", "userId": "u1", "event": "A", "timestamp": "2026-06-01T10:00:00Z"}
        for i in range(5)))
    first = load(ws, path)
    second = load(ws, path)
    assert (first.inserted, first.duplicates) == (5, 0)
    assert (second.read, second.inserted, second.duplicates) == (5, 0, 5)
    assert ws.query("SELECT count(*), count(DISTINCT message_id) FROM raw.events") == [(5, 5)]


def test_first_copy_wins_within_one_file(ws, tmp_path):
    path = write_jsonl(
        tmp_path / "e.jsonl",
        {"type": "track", "messageId": "dup", "userId": "u1", "event": "First", "timestamp": "2026-06-01T10:00:00Z"},
        {"type": "track", "messageId": "dup", "userId": "u2", "event": "Second", "timestamp": "2026-06-02T10:00:00Z"},
    )
    result = load(ws, path)
    assert (result.inserted, result.duplicates) == (1, 1)
    assert ws.query("SELECT user_id, event FROM raw.events WHERE message_id = 'dup'") == [("u1", "First")]


def test_first_copy_wins_across_loads(ws, tmp_path):
    first = write_jsonl(tmp_path / "a.jsonl", {"type": "track", "messageId": "dup", "userId": "u1",
                                               "event": "First", "timestamp": "2026-06-01T10:00:00Z"})
    later = write_jsonl(tmp_path / "b.jsonl", {"type": "identify", "messageId": "dup", "userId": "u9",
                                               "traits": {"plan": "x"}, "timestamp": "2026-06-05T10:00:00Z"})
    load(ws, first)
    result = load(ws, later)
    assert (result.inserted, result.duplicates) == (0, 1)
    assert ws.query("SELECT type, user_id, event FROM raw.events") == [("track", "u1", "First")]


def test_missing_message_id_gets_a_stable_id(ws, tmp_path):
    path = write_jsonl(
        tmp_path / "e.jsonl",
        {"type": "track", "userId": "u1", "event": "A", "timestamp": "2026-06-01T10:00:00Z"},
        {"type": "track", "userId": "u1", "event": "B", "timestamp": "2026-06-01T10:00:00Z"},
    )
    first = load(ws, path)
    ids = {row[0] for row in ws.query("SELECT message_id FROM raw.events")}
    assert first.inserted == 2 and len(ids) == 2 and None not in ids and "" not in ids
    second = load(ws, path)
    assert (second.inserted, second.duplicates) == (0, 2)
    assert {row[0] for row in ws.query("SELECT message_id FROM raw.events")} == ids


def test_stable_id_does_not_depend_on_key_order_or_file(ws, tmp_path):
    a = tmp_path / "a.jsonl"
    a.write_text('{"type": "track", "userId": "u1", "event": "A", "timestamp": "2026-06-01T10:00:00Z"}\n')
    b = tmp_path / "b.jsonl"
    b.write_text('{"timestamp": "2026-06-01T10:00:00Z", "event": "A", "userId": "u1", "type": "track"}\n')
    load(ws, a)
    result = load(ws, b)
    assert (result.inserted, result.duplicates) == (0, 1)


# ---------------------------------------------------------------- time (section 1)


def test_clock_skew_corrected_when_all_three_are_present(ws, tmp_path):
    # the device clock is 1 hour behind: sent at 09:00:05 device time, received 10:00:10
    path = write_jsonl(tmp_path / "e.jsonl", {
        "type": "track", "messageId": "m1", "userId": "u1", "event": "A",
        "timestamp": "2026-06-01T09:00:00Z", "sentAt": "2026-06-01T09:00:05Z", "receivedAt": "2026-06-01T10:00:10Z"})
    load(ws, path)
    row = events(ws)["m1"]
    assert row["timestamp"] == naive("2026-06-01T10:00:05")
    assert row["sent_at"] == naive("2026-06-01T09:00:05")
    assert row["received_at"] == naive("2026-06-01T10:00:10")


def test_without_sent_at_timestamp_is_taken_as_given(ws, tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", {
        "type": "track", "messageId": "m1", "userId": "u1", "event": "A",
        "timestamp": "2026-06-01T09:00:00Z", "receivedAt": "2026-06-01T10:00:10Z"})
    load(ws, path)
    row = events(ws)["m1"]
    assert row["timestamp"] == naive("2026-06-01T09:00:00")
    assert row["sent_at"] is None
    assert row["received_at"] == naive("2026-06-01T10:00:10")


def test_without_timestamp_received_at_is_used(ws, tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", {
        "type": "track", "messageId": "m1", "userId": "u1", "event": "A",
        "sentAt": "2026-06-01T09:00:05Z", "receivedAt": "2026-06-01T10:00:10Z"})
    load(ws, path)
    row = events(ws)["m1"]
    assert row["timestamp"] == naive("2026-06-01T10:00:10")
    assert row["received_at"] == naive("2026-06-01T10:00:10")


def test_without_received_at_the_loader_stamps_its_clock_and_keeps_timestamp(ws, tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", {
        "type": "track", "messageId": "m1", "userId": "u1", "event": "A",
        "timestamp": "2026-06-01T09:00:00Z", "sentAt": "2026-06-01T09:00:05Z"})
    before = datetime.now(UTC).replace(tzinfo=None)
    load(ws, path)
    after = datetime.now(UTC).replace(tzinfo=None)
    row = events(ws)["m1"]
    assert before - timedelta(seconds=1) <= row["received_at"] <= after + timedelta(seconds=1)
    assert row["timestamp"] == naive("2026-06-01T09:00:00")
    assert row["sent_at"] == naive("2026-06-01T09:00:05")


def test_with_no_instant_at_all_timestamp_is_the_loader_clock(ws, tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", {"type": "track", "messageId": "m1", "userId": "u1", "event": "A"})
    before = datetime.now(UTC).replace(tzinfo=None)
    load(ws, path)
    after = datetime.now(UTC).replace(tzinfo=None)
    row = events(ws)["m1"]
    assert before - timedelta(seconds=1) <= row["timestamp"] <= after + timedelta(seconds=1)
    assert row["timestamp"] == row["received_at"]


def test_offsets_are_honoured_and_microseconds_kept(ws, tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", {
        "type": "track", "messageId": "m1", "userId": "u1", "event": "A",
        "timestamp": "2026-06-01T12:00:00.123456+02:00"}, {
        "type": "track", "messageId": "m2", "userId": "u1", "event": "A",
        "timestamp": "2026-06-01T01:30:00.000001-05:30"})
    load(ws, path)
    rows = events(ws)
    assert rows["m1"]["timestamp"] == datetime(2026, 6, 1, 10, 0, 0, 123456)
    assert rows["m2"]["timestamp"] == datetime(2026, 6, 1, 7, 0, 0, 1)


def test_skew_correction_with_mixed_offsets(ws, tmp_path):
    # device says 12:00:00+02:00 (10:00Z), sent 12:00:02+02:00 (10:00:02Z); received 10:00:12Z
    path = write_jsonl(tmp_path / "e.jsonl", {
        "type": "track", "messageId": "m1", "userId": "u1", "event": "A",
        "timestamp": "2026-06-01T12:00:00.500000+02:00", "sentAt": "2026-06-01T12:00:02+02:00",
        "receivedAt": "2026-06-01T10:00:12.250000Z"})
    load(ws, path)
    row = events(ws)["m1"]
    assert row["timestamp"] == datetime(2026, 6, 1, 10, 0, 10, 750000)
    assert row["sent_at"] == datetime(2026, 6, 1, 10, 0, 2)


def test_landed_timestamps_are_utc_whatever_the_session_timezone(ws, tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", {"type": "track", "messageId": "m1", "userId": "u1", "event": "A",
                                              "timestamp": "2026-06-01T12:00:00+02:00"})
    load(ws, path)
    assert ws.query("SELECT strftime(timestamp, '%Y-%m-%dT%H:%M:%S') FROM raw.events") == [("2026-06-01T10:00:00",)]


# ---------------------------------------------------------------- invalid messages


def test_invalid_messages_are_rejected_with_reason_and_origin(ws, tmp_path):
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        {"type": "track", "messageId": "ok1", "userId": "u1", "event": "A", "timestamp": "2026-06-01T10:00:00Z"},
        {"type": "track", "messageId": "bad1", "event": "A", "timestamp": "2026-06-01T10:00:00Z"},
        {"type": "track", "messageId": "bad2", "userId": "u1", "timestamp": "2026-06-01T10:00:00Z"},
        {"type": "alias", "messageId": "bad3", "userId": "u1", "timestamp": "2026-06-01T10:00:00Z"},
        '{"type": "track", "messageId": "bad4", "userId": ',
        {"type": "identify", "messageId": "ok2", "anonymousId": "a1", "traits": {"plan": "free"},
         "timestamp": "2026-06-01T10:00:00Z"},
    )
    result = load(ws, path)
    assert (result.read, result.inserted, result.rejected) == (6, 2, 4)
    assert set(events(ws)) == {"ok1", "ok2"}

    rows = rejected(ws)
    assert [origin for origin, _, _ in rows] == [f"{path}:{n}" for n in (2, 3, 4, 5)]
    reasons = {origin.rsplit(":", 1)[1]: reason for origin, reason, _ in rows}
    assert "userId" in reasons["2"] and "anonymousId" in reasons["2"]
    assert "event" in reasons["3"]
    assert "previousId" in reasons["4"]
    assert "JSON" in reasons["5"]
    messages = {origin.rsplit(":", 1)[1]: message for origin, _, message in rows}
    assert json.loads(messages["2"])["messageId"] == "bad1"  # the message is kept, nothing dropped silently

    assert [origin for origin, _ in result.rejections] == [f"{path}:{n}" for n in (2, 3, 4, 5)]


def test_rejected_messages_record_the_source(ws, tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", {"type": "track", "messageId": "bad", "event": "A"})
    load(ws, path, source="backfill")
    assert ws.query("SELECT source FROM raw.rejected_messages") == [("backfill",)]


@pytest.mark.parametrize("message, words", [
    ({"type": "launch", "messageId": "x", "userId": "u1"}, ["type"]),
    ({"messageId": "x", "userId": "u1", "event": "A"}, ["type"]),
    ({"type": "track", "messageId": "x", "userId": "u1", "event": "A", "timestamp": "yesterday"}, ["timestamp"]),
    ({"type": "track", "messageId": "x", "userId": "u1", "event": "A", "properties": [1, 2]}, ["properties"]),
    ({"type": "group", "messageId": "x", "userId": "u1"}, ["groupId"]),
    ({"type": "alias", "messageId": "x", "previousId": "a1"}, ["userId"]),
])
def test_other_invalid_messages(ws, tmp_path, message, words):
    path = write_jsonl(tmp_path / "e.jsonl", message)
    result = load(ws, path)
    assert (result.inserted, result.rejected) == (0, 1)
    [(origin, reason, _)] = rejected(ws)
    assert origin == f"{path}:1"
    for word in words:
        assert word in reason


def test_a_json_value_that_is_not_an_object_is_rejected(ws, tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", "[1, 2, 3]", '"just a string"')
    result = load(ws, path)
    assert (result.inserted, result.rejected) == (0, 2)


def test_reloading_a_file_does_not_repeat_its_rejections(ws, tmp_path):
    """Regression: every re-load appended the file's rejections again."""
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        '{"type":"track","messageId":"ok","userId":"u","event":"E","timestamp":"2026-06-01T00:00:00Z"}\n'
        '{"type":"track","messageId":"bad","event":"E"}\n'
        "not json\n"
    )
    for _ in range(2):
        load_files(ws.project, ws.warehouse, [path])
    assert ws.query("SELECT count(*) FROM raw.events") == [(1,)]
    rows = ws.query("SELECT reason, message FROM raw.rejected_messages ORDER BY reason")
    assert [reason.split(":")[0] for reason, _ in rows] == ["a message needs userId or anonymousId", "invalid JSON"]
    assert rows[1][1] == "not json"
