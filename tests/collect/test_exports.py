"""`cdp load --format segment-warehouse|rudderstack-warehouse`: Parquet/CSV exports of the
vendors' warehouse tables mapped onto raw.events (spec section 1), on a real DuckDB file."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from cdp_warehouse.cli import main
from cdp_warehouse.collect.exports import load_exports, rebuild_context
from cdp_warehouse.errors import LoadError
from cdp_warehouse.specs import load_project
from cdp_warehouse.warehouses import connect
from tests.conftest import MINIMAL_CDP_YAML, write_project

AUDIENCES = """\
traits:
  - name: orders
    count: {event: Order Completed}
  - name: revenue
    sum: {event: Order Completed, property: total}
  - name: plan
    trait: {trait: plan}
  - name: pricing_views
    count: {event: Pricing}
"""

COLUMNS = ("message_id, type, event, user_id, anonymous_id, group_id, previous_id, timestamp, received_at, "
           "sent_at, properties, traits, context, source")


def at(text: str) -> datetime:
    """An aware UTC instant, as a warehouse's timestamptz column holds it."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def naive(text: str) -> datetime:
    return datetime.fromisoformat(text)


def parquet(path: Path, *rows: dict, schema: pa.Schema | None = None) -> Path:
    pq.write_table(pa.Table.from_pylist(list(rows), schema=schema), path)
    return path


def csv(path: Path, *rows: dict) -> Path:
    """Text columns only, as a warehouse's CSV unload writes them; None → empty field."""
    names = list(dict.fromkeys(name for row in rows for name in row))
    table = pa.table({name: pa.array([row.get(name) for row in rows], type=pa.string()) for name in names})
    pa_csv.write_csv(table, path, pa_csv.WriteOptions(quoting_style="needed"))
    return path


@pytest.fixture
def ws(workspace):
    return workspace(AUDIENCES)


def load(ws, *paths: Path, layout: str = "segment-warehouse", **kwargs):
    return load_exports(ws.project, ws.warehouse, list(paths), layout=layout, **kwargs)


def events(ws) -> dict[str, dict]:
    """message_id → landed row, JSON columns parsed."""
    rows = ws.warehouse.fetch_dicts(f"SELECT {COLUMNS} FROM raw.events")
    for row in rows:
        for column in ("properties", "traits", "context"):
            if isinstance(row[column], str):
                row[column] = json.loads(row[column])
    return {row["message_id"]: row for row in rows}


# ---------------------------------------------------------------- Segment layout

SEGMENT_TRACK = {
    # the device clock is 55 s behind: Segment already corrected `timestamp`
    "id": "t1", "user_id": "u1", "anonymous_id": "a1", "event": "order_completed", "event_text": "Order Completed",
    "timestamp": at("2026-06-01T10:00:00"), "original_timestamp": at("2026-06-01T09:59:05"),
    "sent_at": at("2026-06-01T09:59:10"), "received_at": at("2026-06-01T10:00:05"),
    "uuid_ts": at("2026-06-01T10:05:00"),
    "context_library_name": "analytics.js", "context_library_version": "5.2.0",
    "context_page_url": "https://shop.example/checkout", "context_page_path": "/checkout",
    "context_user_agent": "Mozilla/5.0", "context_ip": "1.2.3.4", "context_locale": "en-US",
    "context_traits_email": "ann@example.com", "context_campaign_source": "newsletter",
    "context_device_advertising_id": None,
}


def test_segment_tracks_and_event_table(ws, tmp_path):
    tracks = parquet(tmp_path / "tracks.parquet", SEGMENT_TRACK,
                     {**SEGMENT_TRACK, "id": "t2", "event": "signed_up", "event_text": "Signed Up"})
    order = {**SEGMENT_TRACK, "total": Decimal("19.99"), "currency": "EUR", "items": 2, "coupon": None,
             "gift": False, "products": '[{"sku":"G-32"}]'}
    event_table = parquet(tmp_path / "order_completed.parquet", order,
                          schema=pa.schema([*pa.Table.from_pylist([SEGMENT_TRACK]).schema,
                                            ("total", pa.decimal128(10, 2)), ("currency", pa.string()),
                                            ("items", pa.int64()), ("coupon", pa.string()), ("gift", pa.bool_()),
                                            ("products", pa.string())]))
    # tracks first on the command line: the event table still lands first, so t1 keeps its properties
    result = load(ws, tracks, event_table, source="segment")
    assert (result.read, result.inserted, result.duplicates, result.rejected) == (3, 2, 1, 0)
    rows = events(ws)

    t1 = rows["t1"]
    assert (t1["type"], t1["event"], t1["user_id"], t1["anonymous_id"], t1["source"]) == (
        "track", "Order Completed", "u1", "a1", "segment")
    # the export's corrected timestamp as given (a second correction would give 10:00:55) and
    # the export's sent_at kept
    assert t1["timestamp"] == naive("2026-06-01T10:00:00")
    assert t1["sent_at"] == naive("2026-06-01T09:59:10")
    assert t1["received_at"] == naive("2026-06-01T10:00:05")
    assert t1["properties"] == {"total": 19.99, "currency": "EUR", "items": 2, "gift": False,
                                "products": '[{"sku":"G-32"}]'}  # null `coupon` left out; arrays stay strings
    assert t1["context"] == {
        "library": {"name": "analytics.js", "version": "5.2.0"},
        "page": {"url": "https://shop.example/checkout", "path": "/checkout"},
        "userAgent": "Mozilla/5.0", "ip": "1.2.3.4", "locale": "en-US",
        "traits": {"email": "ann@example.com"}, "campaign": {"source": "newsletter"},
    }
    assert t1["traits"] is None

    t2 = rows["t2"]  # only in `tracks`, which holds no properties
    assert (t2["type"], t2["event"], t2["properties"]) == ("track", "Signed Up", None)


def test_segment_identifies_csv(ws, tmp_path):
    path = csv(tmp_path / "identifies.csv", {
        "id": "i1", "user_id": "u1", "anonymous_id": "a1", "email": "ann@example.com", "plan": "pro",
        "first_name": "Ann", "address_street": "6th Street", "seats": None,
        # BigQuery writes instants as `... UTC`, others with an offset
        "timestamp": "2026-06-01 09:00:00.250 UTC", "received_at": "2026-06-01 11:00:01+02:00",
        "sent_at": "2026-06-01 09:00:00.500 +0000", "original_timestamp": "2026-06-01 09:00:00 UTC",
        "uuid_ts": "2026-06-01 09:05:00 UTC", "context_ip": "1.2.3.4", "context_library_name": "analytics-ruby",
    })
    assert load(ws, path).inserted == 1
    row = events(ws)["i1"]
    assert (row["type"], row["event"], row["user_id"], row["anonymous_id"]) == ("identify", None, "u1", "a1")
    assert row["traits"] == {"email": "ann@example.com", "plan": "pro", "first_name": "Ann",
                             "address_street": "6th Street"}  # empty `seats` is no trait at all
    assert row["timestamp"] == naive("2026-06-01T09:00:00.250")
    assert row["received_at"] == naive("2026-06-01T09:00:01")
    assert row["sent_at"] == naive("2026-06-01T09:00:00.500")
    assert row["context"] == {"ip": "1.2.3.4", "library": {"name": "analytics-ruby"}}
    assert row["properties"] is None


def test_segment_pages_screens_groups_aliases(ws, tmp_path):
    base = {"timestamp": "2026-06-01T10:00:00Z", "received_at": "2026-06-01T10:00:01Z"}
    pages = csv(tmp_path / "pages.csv", {
        **base, "id": "p1", "anonymous_id": "a1", "name": "Pricing", "path": "/pricing", "title": "Pricing",
        "url": "https://shop.example/pricing", "context_page_referrer": "https://google.com",
        "context_campaign_medium": "cpc",
    })
    screens = parquet(tmp_path / "screens.parquet", {
        "id": "s1", "user_id": "u1", "name": "Home", "context_os_name": "iOS", "context_device_type": "ios",
        "context_screen_inner_width": 390, "timestamp": at("2026-06-01T10:00:00")})
    groups = csv(tmp_path / "groups.csv", {**base, "id": "g1", "user_id": "u1", "group_id": "acme",
                                           "name": "Acme", "employees": "120"})
    aliases = csv(tmp_path / "aliases.csv", {**base, "id": "l1", "user_id": "u1", "previous_id": "a1"})
    assert load(ws, pages, screens, groups, aliases).inserted == 4
    rows = events(ws)

    page = rows["p1"]
    assert (page["type"], page["event"], page["anonymous_id"]) == ("page", "Pricing", "a1")
    assert page["properties"] == {"name": "Pricing", "path": "/pricing", "title": "Pricing",
                                  "url": "https://shop.example/pricing"}
    assert page["context"] == {"page": {"referrer": "https://google.com"}, "campaign": {"medium": "cpc"}}

    screen = rows["s1"]
    assert (screen["type"], screen["event"], screen["properties"]) == ("screen", "Home", {"name": "Home"})
    assert screen["context"] == {"os": {"name": "iOS"}, "device": {"type": "ios"}, "screen": {"innerWidth": 390}}

    group = rows["g1"]
    # CSV carries no types: every value is text (numeric text still sums and compares as a number)
    assert (group["type"], group["group_id"]) == ("group", "acme")
    assert group["traits"] == {"name": "Acme", "employees": "120"}

    alias = rows["l1"]
    assert (alias["type"], alias["user_id"], alias["previous_id"], alias["traits"]) == ("alias", "u1", "a1", None)


def test_a_row_without_timestamp_is_corrected_from_original_timestamp(ws, tmp_path):
    path = parquet(tmp_path / "identifies.parquet", {
        "id": "i1", "user_id": "u1", "timestamp": None, "original_timestamp": at("2026-06-01T09:00:00"),
        "sent_at": at("2026-06-01T09:00:10"), "received_at": at("2026-06-01T09:01:00"), "plan": "pro"},
        schema=pa.schema([("id", pa.string()), ("user_id", pa.string()), ("timestamp", pa.timestamp("us", "UTC")),
                          ("original_timestamp", pa.timestamp("us", "UTC")), ("sent_at", pa.timestamp("us", "UTC")),
                          ("received_at", pa.timestamp("us", "UTC")), ("plan", pa.string())]))
    load(ws, path)
    row = events(ws)["i1"]
    # the vendors' own rule, applied by the landing rules: received_at - (sent_at - original_timestamp)
    assert row["timestamp"] == naive("2026-06-01T09:00:50")
    assert row["sent_at"] == naive("2026-06-01T09:00:10")


# ---------------------------------------------------------------- RudderStack layout


def test_rudderstack_layout(ws, tmp_path):
    # Postgres/Redshift destinations write `timestamp without time zone`: naive = UTC
    identifies = parquet(tmp_path / "identifies.parquet", {
        "id": "ri1", "user_id": "u1", "anonymous_id": "a1", "_user_id": "legacy-7", "email": "ann@example.com",
        "plan": "pro", "channel": "web", "context_ip": "5.6.7.8", "context_request_ip": "5.6.7.8",
        "context_passed_ip": "5.6.7.8", "context_traits_email": "ann@example.com",
        "context_session_id": 1717236000000, "context_source_id": "src-1", "context_destination_type": "POSTGRES",
        "timestamp": naive("2026-06-01T08:00:00"), "original_timestamp": naive("2026-06-01T08:00:00"),
        "sent_at": naive("2026-06-01T08:00:00"), "received_at": naive("2026-06-01T08:00:00.123456"),
        "uuid_ts": naive("2026-06-01T08:10:00")})
    tracks = csv(tmp_path / "tracks.csv", {
        "id": "rt1", "user_id": "u1", "event": "product_added", "event_text": "Product Added", "channel": "web",
        "timestamp": "2026-06-01T09:00:00.000Z", "received_at": "2026-06-01T09:00:01.000Z",
        "sent_at": "2026-06-01T09:00:00.000Z", "context_request_ip": "9.9.9.9", "context_ip": "5.6.7.8",
        "context_passed_ip": "5.6.7.8", "record_id": None, "uuid_ts": "2026-06-01T09:10:00.000Z"})
    # Snowflake destinations upper-case every column name
    product_added = csv(tmp_path / "product_added.csv", {
        "ID": "rt1", "USER_ID": "u1", "EVENT": "product_added", "EVENT_TEXT": "Product Added", "CHANNEL": "web",
        "TIMESTAMP": "2026-06-01T09:00:00.000Z", "RECEIVED_AT": "2026-06-01T09:00:01.000Z",
        "PRICE": "12.5", "SKU": "G-32", "CONTEXT_APP_NAME": "shop", "UUID_TS": "2026-06-01T09:10:00.000Z"})
    pages = csv(tmp_path / "pages.csv", {
        "id": "rp1", "anonymous_id": "a1", "name": "Pricing", "url": "https://shop.example/pricing",
        "context_page_tab_url": "https://shop.example/pricing", "timestamp": "2026-06-01T09:30:00.000Z"})
    result = load(ws, identifies, tracks, product_added, pages, layout="rudderstack-warehouse")
    assert (result.read, result.inserted, result.duplicates, result.rejected) == (4, 3, 1, 0)
    rows = events(ws)

    identify = rows["ri1"]
    assert identify["type"] == "identify"
    # RudderStack escapes a trait named user_id as `_user_id`; `channel` is its own column
    assert identify["traits"] == {"user_id": "legacy-7", "email": "ann@example.com", "plan": "pro"}
    assert identify["context"] == {
        "ip": "5.6.7.8", "request_ip": "5.6.7.8", "passed_ip": "5.6.7.8", "traits": {"email": "ann@example.com"},
        "sessionId": 1717236000000, "sourceId": "src-1", "destinationType": "POSTGRES", "channel": "web"}
    assert identify["timestamp"] == naive("2026-06-01T08:00:00")
    assert identify["received_at"] == naive("2026-06-01T08:00:00.123456")

    track = rows["rt1"]  # the event table's copy: it has the properties
    assert (track["type"], track["event"], track["user_id"]) == ("track", "Product Added", "u1")
    assert track["properties"] == {"price": "12.5", "sku": "G-32"}
    assert track["context"] == {"app": {"name": "shop"}, "channel": "web"}
    assert track["timestamp"] == naive("2026-06-01T09:00:00")

    page = rows["rp1"]
    assert (page["type"], page["event"], page["properties"]) == (
        "page", "Pricing", {"name": "Pricing", "url": "https://shop.example/pricing"})
    assert page["context"] == {"page": {"tab_url": "https://shop.example/pricing"}}


def test_segment_layout_keeps_a_channel_property(ws, tmp_path):
    """`channel` is RudderStack's own column, but an ordinary property in a Segment export."""
    path = csv(tmp_path / "signed_up.csv", {"id": "e1", "user_id": "u1", "event_text": "Signed Up", "channel": "ads",
                                            "timestamp": "2026-06-01T09:00:00Z"})
    load(ws, path)
    assert events(ws)["e1"]["properties"] == {"channel": "ads"}


def test_event_name_falls_back_to_the_table(ws, tmp_path):
    path = csv(tmp_path / "clocked_in.csv", {"id": "e1", "user_id": "u1", "time": "09:00",
                                             "timestamp": "2026-06-01T09:00:00Z"})
    load(ws, path)
    row = events(ws)["e1"]
    assert (row["event"], row["properties"]) == ("clocked_in", {"time": "09:00"})


# ---------------------------------------------------------------- files, errors, idempotence


def test_reloading_is_a_no_op(ws, tmp_path):
    tracks = parquet(tmp_path / "tracks.parquet", SEGMENT_TRACK)
    identifies = csv(tmp_path / "identifies.csv", {"id": "i1", "user_id": "u1", "plan": "pro",
                                                   "timestamp": "2026-06-01T09:00:00Z"})
    first = load(ws, tracks, identifies)
    before = events(ws)
    again = load(ws, tracks, identifies)
    assert (first.inserted, again.inserted, again.duplicates) == (2, 0, 2)
    assert events(ws) == before


def test_table_option_names_a_split_export(ws, tmp_path):
    path = csv(tmp_path / "identifies-000000000000.csv", {"id": "i1", "user_id": "u1", "plan": "pro"})
    load(ws, path, table="identifies")
    assert events(ws)["i1"]["traits"] == {"plan": "pro"}


def test_missing_id_column_is_a_clear_error(ws, tmp_path):
    good = csv(tmp_path / "identifies.csv", {"id": "i1", "user_id": "u1", "plan": "pro"})
    bad = parquet(tmp_path / "order_completed.parquet", {"message_id": "t1", "user_id": "u1", "total": 3})
    with pytest.raises(LoadError) as info:
        load(ws, good, bad)
    message = str(info.value)
    assert str(bad) in message
    assert "no `id` column" in message
    assert "message_id" in message  # the columns found
    # every file is checked before anything lands
    landing = ws.query("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'raw' "
                       "AND table_name = 'events'")[0][0]
    assert landing == 0 or ws.query("SELECT count(*) FROM raw.events")[0][0] == 0


@pytest.mark.parametrize(("name", "row", "words"), [
    ("aliases.csv", {"id": "l1", "user_id": "u1"}, ["`previous_id`"]),
    ("groups.csv", {"id": "g1", "user_id": "u1"}, ["`group_id`"]),
    ("pages.csv", {"id": "p1", "name": "Home"}, ["`user_id`", "`anonymous_id`"]),
])
def test_other_missing_columns(ws, tmp_path, name, row, words):
    path = csv(tmp_path / name, row)
    with pytest.raises(LoadError) as info:
        load(ws, path)
    assert str(path) in str(info.value)
    for word in words:
        assert word in str(info.value)


def test_compressed_csv_and_nanosecond_parquet(ws, tmp_path):
    plain = csv(tmp_path / "identifies.csv", {"id": "i1", "user_id": "u1", "plan": "pro"})
    packed = tmp_path / "identifies.csv.gz"
    with pa.CompressedOutputStream(str(packed), "gzip") as out:
        out.write(plain.read_bytes())
    plain.unlink()
    nanos = parquet(tmp_path / "signed_up.parquet", {"id": "e1", "user_id": "u1", "event_text": "Signed Up",
                                                      "timestamp": 1_780_000_000_123_456_789},
                    schema=pa.schema([("id", pa.string()), ("user_id", pa.string()), ("event_text", pa.string()),
                                      ("timestamp", pa.timestamp("ns", "UTC"))]))
    assert load(ws, packed, nanos).inserted == 2
    rows = events(ws)
    assert rows["i1"]["traits"] == {"plan": "pro"}
    assert rows["e1"]["timestamp"] == datetime.fromtimestamp(1_780_000_000.123456, UTC).replace(tzinfo=None)


def test_state_tables_and_other_files_are_refused(ws, tmp_path):
    users = csv(tmp_path / "users.csv", {"id": "u1", "email": "ann@example.com"})
    with pytest.raises(LoadError, match="latest state"):
        load(ws, users)
    json_file = tmp_path / "tracks.json"
    json_file.write_text("{}\n")
    with pytest.raises(LoadError, match="not a Parquet"):
        load(ws, json_file)


def test_invalid_rows_are_rejected_not_fatal(ws, tmp_path):
    path = csv(tmp_path / "tracks.csv",
               {"id": "t1", "user_id": None, "anonymous_id": None, "event_text": "X",
                "timestamp": "2026-06-01T00:00:00Z"},
               {"id": "t2", "user_id": "u1", "event_text": "X", "timestamp": "yesterday"},
               {"id": "t3", "user_id": "u1", "event_text": "X", "timestamp": "2026-06-01T00:00:00Z", "sent_at": "soon"})
    result = load(ws, path)
    assert (result.inserted, result.rejected) == (0, 3)
    assert [origin for origin, _ in result.rejections] == [f"{path}:1", f"{path}:2", f"{path}:3"]
    assert "userId or anonymousId" in result.rejections[0][1]
    assert "sent_at" in result.rejections[2][1]


def test_context_rules():
    assert rebuild_context({"user_agent": "UA", "user_agent_data_mobile": False, "group_id": "g",
                            "app_foo_bar": 1, "custom_thing": "x", "traits": "abc", "traits_email": "e"}) == {
        "userAgent": "UA", "userAgentData": {"mobile": False}, "groupId": "g", "app": {"foo_bar": 1},
        "custom_thing": "x", "traits": "abc", "traits_email": "e"}


# ---------------------------------------------------------------- the command line, then `cdp run`


def test_cli_load_then_run_computes_traits(tmp_path):
    root = write_project(tmp_path / "project", AUDIENCES, MINIMAL_CDP_YAML + "identity:\n  stitch: true\n")
    exports = tmp_path / "exports"
    exports.mkdir()
    order = {**SEGMENT_TRACK, "total": 19.99}
    parquet(exports / "order_completed.parquet", order, {**order, "id": "t9", "total": 5.01,
                                                         "timestamp": at("2026-06-02T10:00:00")})
    parquet(exports / "tracks.parquet", SEGMENT_TRACK)
    csv(exports / "identifies.csv",
        {"id": "i1", "user_id": "u1", "anonymous_id": "a1", "plan": "free", "timestamp": "2026-05-01 00:00:00 UTC"},
        {"id": "i2", "user_id": "u1", "plan": "pro", "timestamp": "2026-06-01 00:00:00 UTC"},
        {"id": "i3", "user_id": "u1", "plan": None, "timestamp": "2026-06-05 00:00:00 UTC"})
    csv(exports / "pages.csv", {"id": "p1", "anonymous_id": "a1", "name": "Pricing",
                                "timestamp": "2026-06-01 08:00:00 UTC"})
    env = {"CDP_AS_OF": "2026-06-30T00:00:00Z", "CDP_PROJECT": None, "COLUMNS": None}
    runner = CliRunner()

    result = runner.invoke(main, ["--project", str(root), "load", "--format", "segment-warehouse",
                                  *map(str, sorted(exports.iterdir()))], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "6 landed" in result.output and "1 duplicates" in result.output

    again = runner.invoke(main, ["--project", str(root), "load", "--format", "segment-warehouse",
                                 *map(str, sorted(exports.iterdir()))], env=env, catch_exceptions=False)
    assert "0 landed" in again.output

    wrong = runner.invoke(main, ["--project", str(root), "load", "--table", "tracks",
                                 str(exports / "tracks.parquet")], env=env, catch_exceptions=False)
    assert wrong.exit_code == 1 and "--format" in wrong.output

    run = runner.invoke(main, ["--project", str(root), "run"], env=env, catch_exceptions=False)
    assert run.exit_code == 0, run.output
    with connect(load_project(root, environ={})) as warehouse:
        traits = {row["profile_id"]: row for row in warehouse.fetch_dicts("SELECT * FROM cdp.profile_traits")}
    assert set(traits) == {"u1"}  # the anonymous page view is stitched to u1 through a1
    assert traits["u1"]["orders"] == 2
    assert traits["u1"]["revenue"] == pytest.approx(25.0)
    assert traits["u1"]["plan"] == "pro"  # a later identify without plan does not erase it
    assert traits["u1"]["pricing_views"] == 1
