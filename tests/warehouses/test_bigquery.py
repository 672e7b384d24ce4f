"""BigQuery through google-cloud-bigquery, against tests/fakes/bigquery.py: the REST API over
real HTTP on loopback (the client pointed at it with ``api_endpoint`` and anonymous
credentials), executing the BigQuery SQL on DuckDB.

These tests cover the adapter's calls (query jobs and their polling, sessions, load jobs from
Parquet, dry runs, error responses) and the SQL text it sends; BigQuery's own semantics
beyond what DuckDB shares are not reproduced (docs/warehouses/bigquery.md)."""

from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta

import pyarrow as pa
import pytest
from sqlglot import exp

from cdp_warehouse.errors import WarehouseError
from cdp_warehouse.specs import load_project
from cdp_warehouse.warehouses import connect
from cdp_warehouse.warehouses.base import create_as, create_table
from cdp_warehouse.warehouses.bigquery import BigQueryWarehouse, client_arguments
from tests.cli.test_cli_validate_load import cdp, runner  # noqa: F401 (fixture)
from tests.fakes import FakeBraze
from tests.fakes.bigquery import FakeBigQuery
from tests.fakes.server import Fault
from tests.warehouses.conftest import demo_halves
from tests.warehouses.test_postgres import DUCKDB_YAML, END, TABLES, _example, computed_in_halves

pytest.importorskip("google.cloud.bigquery")

PROJECT = "cdp-test"
EVENTS = 3_000


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    return demo_halves(tmp_path_factory.mktemp("demo"), EVENTS, END)



def bigquery_yaml(fake: FakeBigQuery) -> str:
    return f"  type: bigquery\n  project: {PROJECT}\n  api_endpoint: {fake.url}\n"


@pytest.fixture
def fake():
    with FakeBigQuery(project=PROJECT, polls_until_done=2) as server:
        yield server


@pytest.fixture
def bq(fake):
    from cdp_warehouse.specs.models import BigQueryWarehouse as Config

    warehouse = BigQueryWarehouse.connect(client_arguments(Config(type="bigquery", project=PROJECT,
                                                                  api_endpoint=fake.url)), "t")
    warehouse.execute(exp.Create(this=exp.to_identifier("t", quoted=True), kind="SCHEMA", exists=True))
    yield warehouse
    warehouse.close()


def test_client_arguments_credentials():
    from google.auth.credentials import AnonymousCredentials

    from cdp_warehouse.specs.models import BigQueryWarehouse as Config

    emulator = client_arguments(Config(type="bigquery", project="p", location="EU", api_endpoint="http://127.0.0.1:9"))
    assert emulator["client_options"] == {"api_endpoint": "http://127.0.0.1:9"} and emulator["location"] == "EU"
    assert isinstance(emulator["credentials"], AnonymousCredentials)
    assert client_arguments(Config(type="bigquery", project="p")) == {"project": "p"}  # Application Default
    with pytest.raises(WarehouseError, match="credentials file /nowhere.json"):
        client_arguments(Config(type="bigquery", project="p", credentials_path="/nowhere.json"))


def test_query_jobs_are_polled_in_one_session_and_read_back_as_duckdb_would(fake, bq):
    table = exp.table_("rows", db="t", quoted=True)
    bq.execute(create_table(table, [("id", "text"), ("j", "json"), ("at", "timestamp"), ("n", "bigint")]))
    at = datetime(2026, 6, 30, 12, 0, 0, 123456)
    bq.execute(exp.insert(exp.select(exp.Placeholder(), exp.func("PARSE_JSON", exp.Placeholder()), exp.Placeholder(),
                                     exp.Placeholder()), table.copy()), ["a", '{"k": [1, "two"]}', at, 7])
    assert bq.fetch(exp.select("*").from_(table)) == [("a", '{"k": [1, "two"]}', at, 7)]
    assert bq.fetch_dicts(exp.select("id", "n").from_(table)) == [{"id": "a", "n": 7}]
    # every job was polled (RUNNING first) and ran in the connection's session
    inserted = [r for r in fake.requests if r.method == "POST" and r.path.endswith("/jobs")]
    sessions = {r.body["configuration"]["query"].get("connectionProperties", [{}])[0].get("value")
                for r in inserted[1:]}
    assert sessions == {bq.session_id} and bq.session_id
    # polls_until_done=2: each job answered "not done" at least once before its rows
    not_done = [r for r in fake.requests if r.method == "GET" and isinstance(r.response_body, dict)
                and (r.response_body.get("jobComplete") is False
                     or r.response_body.get("status", {}).get("state") == "RUNNING")]
    assert len(not_done) >= len(inserted)


def test_insert_arrow_loads_parquet_skips_known_keys_and_stores_json(fake, bq):
    table = exp.table_("rows", db="t", quoted=True)
    bq.execute(create_table(table, [("id", "text"), ("v", "text"), ("j", "json"), ("at", "timestamp"),
                                    ("n", "integer"), ("ok", "boolean")]))
    at = datetime(2026, 6, 30, 12, 0, 0, 123456)
    rows = pa.table({"id": ["a", "b", "c", "c"], "v": ["x", "", None, None],
                     "j": ['{"k": [1, "two"]}', None, "null", "null"],
                     "at": pa.array([at, None, at, at], pa.timestamp("us")), "n": pa.array([1, None, 3, 3], pa.int32()),
                     "ok": [True, None, False, False]})
    assert bq.insert_arrow(table, rows, skip_existing_key="id") == 3  # "c" twice lands once
    assert bq.insert_arrow(table, rows, skip_existing_key="id") == 0  # idempotent
    got = {row[0]: row[1:] for row in bq.fetch(exp.select("*").from_(table))}
    # a JSON null reads back as NULL: the client decodes JSON cells, and "null" decodes to None
    assert got == {"a": ("x", '{"k": [1, "two"]}', at, 1, True), "b": ("", None, None, None, None),
                   "c": (None, None, at, 3, False)}
    assert bq.fetch(exp.select(exp.func("TO_JSON_STRING", exp.column("j"))).from_(table)
                    .where(exp.column("id").eq(exp.Literal.string("c")))) == [("null",)]
    uploads = [r for r in fake.requests if r.path.startswith("/upload/")]
    assert len(uploads) == 2 and all("uploadType=multipart" in r.query for r in uploads)
    assert uploads[0].body is None or "PARQUET" in uploads[0].raw.decode("latin-1")
    # the staging tables are gone
    assert fake.query("SELECT table_name FROM information_schema.tables WHERE table_schema = 't'") == [("rows",)]


def test_a_large_load_goes_through_a_resumable_upload(fake, bq):
    table = exp.table_("big", db="t", quoted=True)
    bq.execute(create_table(table, [("id", "text"), ("payload", "text")]))
    count = 60_000
    rows = pa.table({"id": [f"m{i:06d}" for i in range(count)],
                     "payload": [os.urandom(48).hex() for _ in range(count)]})  # > 5 MB of Parquet
    assert bq.insert_arrow(table, rows, skip_existing_key="id") == count
    assert any("uploadType=resumable" in r.query and r.method == "PUT" for r in fake.requests)
    assert bq.fetch(exp.select(exp.Count(this=exp.Star())).from_(table)) == [(count,)]


def test_replacement_and_temporary_tables_live_in_the_session(fake, bq):
    table = exp.table_("t1", db="t", quoted=True)
    bq.execute(create_as(table, exp.select(exp.alias_(exp.Literal.number(1), "n", quoted=True))))
    # CREATE OR REPLACE may read the table it replaces
    bq.execute(create_as(table.copy(), exp.select(exp.alias_(exp.column("n", quoted=True) + 1, "n", quoted=True))
                         .from_(table.copy())))
    assert bq.fetch(exp.select("n").from_(table)) == [(2,)]
    scratch = exp.to_table("_scratch")
    bq.execute(create_as(scratch, exp.select(exp.alias_(exp.Literal.number(5), "n")), temporary=True))
    assert bq.fetch(exp.select("n").from_(scratch)) == [(5,)]
    other = bq.duplicate()
    try:
        with pytest.raises(WarehouseError, match="must be qualified with a dataset"):
            other.fetch(exp.select("n").from_(scratch.copy()))  # another session does not see it
    finally:
        other.close()
    assert bq.columns("t", "t1") == ["n"] and bq.columns("t", "none") == []
    # DELETE of every row gets the WHERE BigQuery requires
    bq.execute(exp.Delete(this=table.copy()))
    assert bq.fetch(exp.select(exp.Count(this=exp.Star())).from_(table)) == [(0,)]


def test_errors_are_one_line_and_transient_failures_are_retried(fake, bq):
    with pytest.raises(WarehouseError) as error:
        bq.fetch(exp.select("*").from_(exp.table_("missing", db="t")))
    assert str(error.value).startswith("Not found: Table") and "\n" not in str(error.value)
    with pytest.raises(WarehouseError, match="Syntax error"):
        bq.execute("SELEC 1")
    # BigQuery's rules the fake keeps, and the adapter's SQL respects
    with pytest.raises(WarehouseError, match="Invalid cast from JSON to STRING"):
        bq.fetch("SELECT CAST(JSON_OBJECT('a', 1) AS STRING)")
    payload = exp.cast(exp.JSONObject(expressions=[exp.JSONKeyValue(this=exp.Literal.string("a"),
                                                                   expression=exp.Literal.number(1))]), "text")
    assert bq.fetch(exp.select(payload)) == [('{"a":1}',)]  # rendered as TO_JSON_STRING
    with pytest.raises(WarehouseError, match="UPDATE must have a WHERE clause"):
        bq.execute("UPDATE t.nothing SET n = 1")
    # a job that fails with backendError is run again as a new job by the client
    fake.fail_next_jobs("backendError", "Backend error, please retry")
    assert bq.fetch("SELECT 41 + 1") == [(42,)]
    # a 503 and a 429 on requests are retried by the client's default retry
    fake.inject(Fault(status=503, times=1), Fault(status=429, times=1))
    assert bq.fetch("SELECT 'after faults'") == [("after faults",)]
    assert any(r.status == 503 for r in fake.requests) and any(r.status == 429 for r in fake.requests)


def test_explain_is_a_dry_run_with_the_bytes_it_would_scan(fake, bq):
    table = exp.table_("rows", db="t", quoted=True)
    bq.execute(create_as(table, exp.select(exp.alias_(exp.Literal.number(1), "a"), exp.alias_(exp.Literal.string("x"), "b"))))
    before = len(fake.jobs)
    plan = bq.explain(exp.select("*").from_(table))
    assert plan == "dry run: SELECT would process 16 bytes (0.0 MiB)"  # the fake bills rows x columns x 8
    dry = [j for j in list(fake.jobs.values())[before:] if j.configuration.get("dryRun")]
    assert len(dry) == 1


@pytest.mark.parametrize("stitch", [False, True], ids=["coalesce", "stitched"])
def test_bigquery_computes_what_duckdb_computes(tmp_path, events, stitch):
    """The example project on the demo events, loaded in two halves with a run after each:
    every table equal, row by row, on the fake BigQuery and on DuckDB."""
    with FakeBigQuery(project=PROJECT, polls_until_done=1) as fake:
        projects = {
            "duckdb": load_project(_example(tmp_path / "duckdb", DUCKDB_YAML, "raw", "cdp", stitch=stitch), environ={}),
            "bigquery": load_project(_example(tmp_path / "bigquery", bigquery_yaml(fake), "raw", "cdp", stitch=stitch),
                                     environ={}),
        }
        names = TABLES + (("identity_map",) if stitch else ())
        computed = computed_in_halves(projects, events, names)
    for name in names:
        assert computed["duckdb"][name], name
        assert computed["bigquery"][name] == computed["duckdb"][name], name



def test_load_run_explain_and_sync_the_example_project_on_bigquery(runner, tmp_path, events):  # noqa: F811 (runner)
    """The CLI end to end on the fake: `cdp load`, `cdp run`, `cdp run --explain` (dry runs;
    nothing it builds is kept), `cdp sync` to Braze and a second sync that sends nothing."""
    with FakeBigQuery(project=PROJECT, polls_until_done=1) as fake, FakeBraze() as braze:
        root = _example(tmp_path / "example", bigquery_yaml(fake), "raw", "cdp")
        env = {"CDP_PROJECT": str(root), "CDP_AS_OF": END.isoformat(),
               "BRAZE_REST_ENDPOINT": braze.url, "BRAZE_API_KEY": braze.api_key}
        loaded = cdp(runner, "load", *events, env=env)
        assert loaded.exit_code == 0, loaded.output
        assert "0 landed" in cdp(runner, "load", events[0], env=env).output  # idempotent on message_id
        ran = cdp(runner, "run", env=env)
        assert ran.exit_code == 0, ran.output
        kept = {name: fake.query(f"SELECT * FROM cdp.{name} ORDER BY ALL") for name in TABLES}
        datasets = fake.query("SELECT schema_name FROM information_schema.schemata ORDER BY 1")

        explained = cdp(runner, "run", "--explain", "--as-of", (END + timedelta(days=30)).isoformat(), env=env)
        assert explained.exit_code == 0, explained.output
        assert explained.output.count("(bigquery dry run)") == 4
        assert explained.output.count("dry run: ") == 4 and "would process" in explained.output
        previewed = cdp(runner, "preview", "churn_risk", "--as-of", (END + timedelta(days=30)).isoformat(), env=env)
        assert previewed.exit_code == 0, previewed.output
        assert "churn_risk" in previewed.output
        # what explain and preview built is gone, and the real tables are as the run left them
        assert {name: fake.query(f"SELECT * FROM cdp.{name} ORDER BY ALL") for name in TABLES} == kept
        assert fake.query("SELECT schema_name FROM information_schema.schemata ORDER BY 1") == datasets
        tables = fake.query("SELECT table_name FROM information_schema.tables WHERE table_schema = 'cdp' ORDER BY 1")
        assert not [name for (name,) in tables if name.startswith(("_cdp_dry", "_cdp_incoming"))]

        synced = cdp(runner, "sync", "churn_risk", "--to", "braze", env=env)
        assert synced.exit_code == 0, synced.output
        expected = {row[0] for row in fake.query(
            "SELECT p.user_id FROM cdp.audience_members AS m JOIN cdp.profiles AS p USING (profile_id) "
            "WHERE m.audience = 'churn_risk' AND m.split <> 'holdout' AND p.user_id IS NOT NULL")}
        members = {u.external_id for u in braze.users.values() if u.attributes.get("churn_risk") is True}
        assert members == expected and members
        assert fake.query("SELECT COUNT(*) FROM cdp.sync_state")[0][0] == len(members)
        sent = len(braze.requests)
        assert cdp(runner, "sync", "churn_risk", "--to", "braze", env=env).exit_code == 0
        assert len(braze.requests) == sent  # nothing changed, nothing sent


def test_sessions_run_where_the_models_dataset_lives(fake):
    """A session runs every job in its own location: without `location:` in cdp.yaml the
    adapter takes the models dataset's, so an EU project is not searched for in the US."""
    from cdp_warehouse.specs.models import BigQueryWarehouse as Config

    def connect_to(location: str | None) -> BigQueryWarehouse:
        return BigQueryWarehouse.connect(client_arguments(Config(type="bigquery", project=PROJECT, location=location,
                                                                 api_endpoint=fake.url)), "eu_models")

    with connect_to("EU") as creator:
        creator.execute(exp.Create(this=exp.to_identifier("eu_models", quoted=True), kind="SCHEMA", exists=True))
        creator.execute(create_as(exp.table_("t", db="eu_models"), exp.select(exp.alias_(exp.Literal.number(1), "n"))))
    with connect_to(None) as found:
        assert found.arguments["location"] == "EU"
        assert found.fetch(exp.select("n").from_(exp.table_("t", db="eu_models"))) == [(1,)]
    with connect_to("US") as elsewhere, pytest.raises(WarehouseError, match="not found in location US"):
        elsewhere.fetch(exp.select("n").from_(exp.table_("t", db="eu_models")))


def test_a_column_of_nulls_only_loads(bq):
    table = exp.table_("sparse", db="t", quoted=True)
    bq.execute(create_table(table, [("id", "text"), ("payload", "text"), ("at", "timestamp")]))
    rows = pa.table({"id": ["a", "b"], "payload": pa.array([None, None]), "at": pa.array([None, None])})
    assert rows.schema.field("payload").type == pa.null()  # what the sync engine makes of a batch of removals
    assert bq.insert_arrow(table, rows, skip_existing_key="id") == 2
    assert sorted(bq.fetch(exp.select("*").from_(table))) == [("a", None, None), ("b", None, None)]


def test_a_rolled_back_transaction_writes_stand_ins_only(fake, bq):
    table = exp.table_("kept", db="t", quoted=True)
    bq.execute(create_as(table, exp.select(exp.alias_(exp.Literal.number(1), "n", quoted=True))))
    with bq.transaction(rollback=True):
        bq.execute(exp.insert(exp.select(exp.Literal.number(2)), table.copy()))
        aliased = exp.delete(exp.alias_(table.copy(), "x"), where=exp.column("n", table="x").eq(exp.Literal.number(1)))
        bq.execute(aliased)
        assert bq.fetch(exp.select("n").from_(table.copy())) == [(2,)]  # reads see the writes
        assert bq.columns("t", "kept") == ["n"]
        with pytest.raises(WarehouseError, match="TRUNCATE"):
            bq.execute(exp.TruncateTable(expressions=[table.copy()]))
        with pytest.raises(WarehouseError, match="as text"):
            bq.execute("DELETE FROM t.kept WHERE TRUE")
    assert fake.query("SELECT n FROM t.kept") == [(1,)]
    assert fake.query("SELECT COUNT(*) FROM duckdb_tables() WHERE table_name LIKE '_cdp_dry%'") == [(0,)]


@pytest.mark.parametrize(("module", "warehouse_yaml", "extra"), [
    ("google.cloud.bigquery", f"  type: bigquery\n  project: {PROJECT}\n", "bigquery"),
    ("snowflake.connector", "  type: snowflake\n  account: a\n  user: u\n  password: p\n  database: d\n", "snowflake"),
])
def test_a_missing_connector_is_one_line_with_the_install_command(tmp_path, monkeypatch, module, warehouse_yaml, extra):
    monkeypatch.setitem(sys.modules, module, None)  # as if the extra were not installed
    project = load_project(_example(tmp_path / "p", warehouse_yaml, "raw", "cdp"), environ={})
    with pytest.raises(WarehouseError, match=f"needs the {module} package") as error:
        connect(project)
    assert error.value.hint == f"pip install 'cdp_warehouse[{extra}]'"
