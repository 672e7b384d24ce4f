"""Snowflake on fakesnow (Snowflake SQL executed on DuckDB): the warehouse interface, `cdp
load` through a stage, and `cdp run` computing the same tables as DuckDB on the same events.

fakesnow runs what the adapter sends through snowflake-connector-python, so these tests cover
the SQL text and the connector calls, not Snowflake's own semantics (docs/warehouses/snowflake.md
lists what fakesnow cannot do)."""

from __future__ import annotations

import json
import warnings
from datetime import datetime, timedelta

import pyarrow as pa
import pytest
from sqlglot import exp

from cdp_warehouse.collect.loader import load_files
from cdp_warehouse.demo.generator import generate_events
from cdp_warehouse.runner import run
from cdp_warehouse.specs import load_project
from cdp_warehouse.warehouses import connect
from cdp_warehouse.warehouses.base import create_as, create_table
from cdp_warehouse.warehouses.snowflake import SnowflakeWarehouse, connect_arguments
from tests.warehouses.test_postgres import DUCKDB_YAML, END, TABLES, _example, _tables

fakesnow = pytest.importorskip("fakesnow")

SNOWFLAKE_YAML = "  type: snowflake\n  account: fake\n  user: cdp\n  password: fake\n  database: cdp_test\n"
EVENTS = 3_000


@pytest.fixture(autouse=True)
def fake_snowflake():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fakesnow's notes on Arrow copies
        with fakesnow.patch():
            yield


@pytest.fixture
def sf():
    warehouse = SnowflakeWarehouse.connect({"account": "fake", "user": "cdp", "password": "fake", "database": "cdp_test"})
    yield warehouse
    warehouse.close()


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    messages = list(generate_events(EVENTS, end=END))
    halves = [folder / "first.jsonl", folder / "second.jsonl"]
    for path, part in zip(halves, (messages[::2], messages[1::2]), strict=True):
        path.write_text("".join(json.dumps(m) + "\n" for m in part))
    return halves


def test_connect_arguments_password_or_key_pair(monkeypatch):
    from cdp_warehouse.specs.models import SnowflakeWarehouse as Config

    password = Config(type="snowflake", account="acme-eu", user="cdp", password="s3cret", database="analytics",
                      role="CDP", warehouse="CDP_WH")
    assert connect_arguments(password) | {"session_parameters": None} == {
        "account": "acme-eu", "user": "cdp", "database": "analytics", "application": "cdp_warehouse",
        "session_parameters": None, "role": "CDP", "warehouse": "CDP_WH", "password": "s3cret"}
    monkeypatch.setenv("SNOWFLAKE_PRIVATE_KEY_PASSPHRASE", "phrase")
    key = connect_arguments(Config(type="snowflake", account="a", user="u", database="d", private_key_path="/k.p8"))
    assert key["authenticator"] == "SNOWFLAKE_JWT" and key["private_key_file"] == "/k.p8"
    assert key["private_key_file_pwd"] == "phrase" and "password" not in key


def test_insert_arrow_stages_skips_known_keys_and_stores_variant(sf):
    sf.execute(exp.Create(this=exp.to_identifier("t", quoted=True), kind="SCHEMA", exists=True))
    table = exp.table_("rows", db="t", quoted=True)
    sf.execute(create_table(table, [("id", "text"), ("v", "text"), ("j", "json"), ("at", "timestamp"),
                                    ("n", "integer"), ("ok", "boolean")]))
    assert dict(sf._column_types("t", "rows"))["j"] == "VARIANT"
    at = datetime(2026, 6, 30, 12, 0, 0, 123456)
    rows = pa.table({"id": ["a", "b", "c"], "v": ["x", "", None], "j": ['{"k": [1, "two"]}', None, "null"],
                     "at": pa.array([at, None, at], pa.timestamp("us")), "n": pa.array([1, None, 3], pa.int32()),
                     "ok": [True, None, False]})
    assert sf.insert_arrow(table, rows, skip_existing_key="id") == 3
    assert sf.insert_arrow(table, rows, skip_existing_key="id") == 0  # idempotent
    got = {row[0]: row[1:] for row in sf.fetch(exp.select("*").from_(table))}
    assert got == {"a": ("x", '{"k":[1,"two"]}', at, 1, True), "b": ("", None, None, None, None),
                   "c": (None, "null", at, 3, False)}
    # VARIANT paths as the compiler reads them
    text = exp.JSONExtractScalar(this=exp.column("j"), expression=exp.JSONPath(expressions=[
        exp.JSONPathRoot(), exp.JSONPathKey(this="k")]))
    assert sf.fetch(exp.select(text).from_(table).where(exp.column("id").eq(exp.Literal.string("a")))) == [("[1,\"two\"]",)]
    assert sf.columns("t", "rows") == ["id", "v", "j", "at", "n", "ok"] and sf.columns("t", "none") == []
    # a native replacement; names keep their case (the adapter quotes every identifier, or
    # Snowflake would upper-case `m`)
    sf.execute(create_as(table.copy(), exp.select(exp.alias_(exp.Literal.number(1), "n", quoted=True),
                                                  exp.alias_(exp.Literal.number(2), "m"))))
    assert sf.fetch_arrow(exp.select("*").from_(table)).to_pylist() == [{"n": 1, "m": 2}]


@pytest.mark.parametrize("stitch", [False, True], ids=["coalesce", "stitched"])
def test_snowflake_computes_what_duckdb_computes(tmp_path, events, stitch):
    """The example project on the demo events, loaded in two halves with a run after each:
    every table equal, row by row, on fakesnow and on DuckDB."""
    projects = {
        "duckdb": load_project(_example(tmp_path / "duckdb", DUCKDB_YAML, "raw", "cdp", stitch=stitch), environ={}),
        "snowflake": load_project(_example(tmp_path / "snowflake", SNOWFLAKE_YAML, "raw", "cdp", stitch=stitch),
                                  environ={}),
    }
    names = TABLES + (("identity_map",) if stitch else ())
    computed = {}
    for kind, project in projects.items():
        with connect(project) as warehouse:
            assert warehouse.dialect == kind
            load_files(project, warehouse, [events[0]])
            run(project, warehouse, END - timedelta(days=7))
            load_files(project, warehouse, [events[1]])
            run(project, warehouse, END)
            computed[kind] = _tables(project, warehouse, names)
    for name in names:
        duckdb_rows, snowflake_rows = computed["duckdb"][name], _arrays(computed["snowflake"][name])
        assert duckdb_rows, name  # a few thousand events: small audiences, but none empty
        assert snowflake_rows == duckdb_rows, name


def _arrays(rows: list[tuple]) -> list[tuple]:
    """fakesnow types a table's ARRAY column as VARIANT (DuckDB stores it as JSON), so the
    adapter cannot tell it from JSON text; Snowflake says ARRAY and the adapter decodes it.
    And fakesnow's ARRAY_AGG keeps NULLs, which Snowflake's leaves out (docs.snowflake.com/en/
    sql-reference/functions/array_agg: "NULL values are omitted"); the compiled SQL relies on
    that (``ARRAY_AGG(IFF(c, x, NULL))``), so they are dropped here as Snowflake would."""
    def value(v):
        if isinstance(v, str) and v.startswith("["):
            return [item for item in json.loads(v) if item is not None]
        return v
    return sorted((tuple((k, value(v)) for k, v in row) for row in rows), key=repr)
