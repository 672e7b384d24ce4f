"""`compiler.dialects.lower`: DuckDB's vocabulary rewritten for PostgreSQL, DuckDB untouched.
(Whether the rewritten SQL computes the same rows is tests/warehouses/test_postgres.py.)"""

from __future__ import annotations

import re

import pytest
import sqlglot
from sqlglot import exp

from cdp_warehouse.compiler.dialects import lower
from cdp_warehouse.compiler.plan import compile_project
from cdp_warehouse.errors import CdpError
from cdp_warehouse.specs import load_project
from tests.conftest import AS_OF, REPO

DUCKDB_ONLY = (exp.ArgMin, exp.ArgMax, exp.TryCast, exp.AnyValue, exp.Struct, exp.StructExtract, exp.ArraySlice,
               exp.JSONObject)


def _lowered(sql: str) -> str:
    return lower(sqlglot.parse_one(sql, read="duckdb"), "postgres").sql("postgres")


def test_duckdb_trees_are_returned_as_they_are():
    tree = sqlglot.parse_one("SELECT ARG_MIN(a, STRUCT_PACK(x := b)) FROM t", read="duckdb")
    assert lower(tree, "duckdb") is tree


def test_arg_min_over_a_struct_key_orders_by_its_fields():
    assert _lowered("SELECT ARG_MIN(v, CASE WHEN c THEN STRUCT_PACK(ts := ts, m := id) END) FROM t") == (
        "SELECT (ARRAY_AGG(v ORDER BY ts ASC, id ASC) FILTER(WHERE (c)))[1] FROM t")
    # a plain key: rows where it is NULL are left out, as DuckDB's ARG_MAX does
    assert _lowered("SELECT ARG_MAX(v, k) FILTER (WHERE x > 0) FROM t") == (
        "SELECT (ARRAY_AGG(v ORDER BY k DESC NULLS LAST) FILTER(WHERE (x > 0) AND (NOT k IS NULL)))[1] FROM t")


def test_try_cast_tests_the_text_before_casting():
    text = _lowered("SELECT TRY_CAST(x AS DOUBLE), TRY_CAST(x AS BOOLEAN) FROM t")
    assert "TRY_CAST" not in text and "CASE WHEN CAST(x AS TEXT) ~ '^\\s*[+-]?" in text
    assert "WHEN LOWER(x) IN ('true', 't', 'yes', 'y', '1') THEN TRUE" in text


def test_json_paths_use_operators_and_subqueries_get_aliases():
    assert _lowered("SELECT c ->> '$.traits.email', ANY_VALUE(y) FROM (SELECT * FROM (SELECT 1))") == (
        "SELECT (c -> 'traits' ->> 'email'), MAX(y) FROM (SELECT * FROM (SELECT 1) AS _q0) AS _q1")


def test_a_struct_value_left_over_is_an_error_not_wrong_sql():
    with pytest.raises(CdpError, match="STRUCT values are not supported on postgres"):
        _lowered("SELECT STRUCT_EXTRACT(MIN(STRUCT_PACK(a := x)), 'a') FROM t")


@pytest.mark.parametrize("stitch", [False, True])
def test_the_postgres_plan_has_no_duckdb_only_construct_and_lowering_is_idempotent(tmp_path, stitch):
    for name in ("cdp.yaml", "tracking_plan.yaml"):
        (tmp_path / name).write_text((REPO / name).read_text().replace(
            "identity:\n", "identity:\n  stitch: true\n" if stitch else "identity:\n", 1))
    (tmp_path / "audiences").mkdir()
    for path in (REPO / "audiences").glob("*.yaml"):
        (tmp_path / "audiences" / path.name).write_text(path.read_text())
    plan = compile_project(load_project(tmp_path, environ={}), AS_OF, dialect="postgres")
    for model in plan.models:
        assert not list(model.select.find_all(*DUCKDB_ONLY)), model.table
        text = model.select.sql("postgres")
        assert lower(model.select, "postgres").sql("postgres") == text
        assert sqlglot.parse_one(text, read="postgres") is not None


# ---------------------------------------------------------------- Snowflake and BigQuery

# Functions each warehouse has (its reference: docs.snowflake.com/en/sql-reference/functions-all,
# cloud.google.com/bigquery/docs/reference/standard-sql/functions-all), as our plans call them.
# Anything else in compiled SQL (DuckDB's ARG_MIN, STRUCT_PACK, LIST_SLICE, ...) fails the test.
COMMON_FUNCTIONS = {"ABS", "ANY_VALUE", "ARRAY_AGG", "CAST", "COALESCE", "COUNT", "CURRENT_TIMESTAMP", "LOWER",
                    "LPAD", "MAX", "MAX_BY", "MD5", "MIN", "MIN_BY", "MOD", "NULLIF", "ROUND", "ROW_NUMBER",
                    "SUBSTRING", "SUM", "TRIM", "UPPER", "REGEXP_LIKE", "LEAST", "GREATEST", "LENGTH", "CONCAT"}
ALLOWED_FUNCTIONS = {
    "snowflake": COMMON_FUNCTIONS | {"ARRAY_SLICE", "CHARINDEX", "CONVERT_TIMEZONE", "COUNT_IF", "DATE_PART",
                                     "DATEADD", "DATEDIFF", "GET_PATH", "IFF", "TRY_CAST", "OBJECT_CONSTRUCT_KEEP_NULL",
                                     "ARRAY_SIZE", "HASH", "TO_VARCHAR", "REGEXP_REPLACE"},
    "bigquery": COMMON_FUNCTIONS | {"ARRAY", "COUNTIF", "DATETIME", "DATETIME_DIFF", "DATE_DIFF", "IF", "INSTR",
                                    "JSON_VALUE", "SAFE_CAST", "TIMESTAMP", "TO_HEX", "UNIX_MICROS", "JSON_OBJECT",
                                    "ARRAY_LENGTH", "TO_JSON_STRING", "REGEXP_CONTAINS", "REGEXP_REPLACE", "UNNEST"},
}
_CALL = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*)\s*\(")


def _called_functions(tree: exp.Expression, dialect: str) -> set[str]:
    """The names of the functions ``tree`` calls, as ``dialect`` spells them."""
    names = set()
    for node in tree.find_all(exp.Func):
        if isinstance(node, (exp.Case, exp.If)) and not node.sql(dialect).upper().startswith(("IF(", "IFF(")):
            continue
        match = _CALL.match(node.sql(dialect))
        if match:
            names.add(match.group(1).upper())
    return names


def _example_project(root, stitch: bool):
    for name in ("cdp.yaml", "tracking_plan.yaml"):
        (root / name).write_text((REPO / name).read_text().replace(
            "identity:\n", "identity:\n  stitch: true\n" if stitch else "identity:\n", 1))
    (root / "audiences").mkdir()
    for path in (REPO / "audiences").glob("*.yaml"):
        (root / "audiences" / path.name).write_text(path.read_text())
    return load_project(root, environ={})


@pytest.mark.parametrize("stitch", [False, True], ids=["coalesce", "stitched"])
@pytest.mark.parametrize("dialect", ["snowflake", "bigquery"])
def test_every_compiled_model_parses_and_calls_only_the_warehouses_functions(tmp_path, dialect, stitch):
    plan = compile_project(_example_project(tmp_path, stitch), AS_OF, dialect=dialect)
    for model in plan.models:
        assert not list(model.select.find_all(exp.Struct, exp.StructExtract, exp.ArraySlice)), model.table
        text = model.select.sql(dialect)
        assert lower(model.select, dialect).sql(dialect) == text  # idempotent
        parsed = sqlglot.parse_one(text, read=dialect)  # raises on SQL the dialect does not parse
        called = _called_functions(parsed, dialect)
        assert called <= ALLOWED_FUNCTIONS[dialect], (model.table, called - ALLOWED_FUNCTIONS[dialect])
        assert "FILTER(" not in text.replace(" ", "").upper(), model.table


def test_a_struct_order_key_becomes_text_that_sorts_the_same_way():
    tree = sqlglot.parse_one(
        "SELECT ARG_MIN(v, CASE WHEN c THEN STRUCT_PACK(ts := ts, m := id) END) FILTER (WHERE x > 0) FROM t",
        read="duckdb")
    assert lower(tree, "snowflake").sql("snowflake") == (
        "SELECT MIN_BY(v, CASE WHEN x > 0 THEN CASE WHEN c THEN LPAD(CAST((DATE_PART(EPOCH_MICROSECOND, ts) + "
        "62135596800000000) AS VARCHAR), 20, '0') || CAST(id AS VARCHAR) END END) FROM t")
    assert lower(tree, "bigquery").sql("bigquery") == (
        "SELECT MIN_BY(v, CASE WHEN x > 0 THEN CASE WHEN c THEN LPAD(CAST((UNIX_MICROS(TIMESTAMP(ts)) + "
        "62135596800000000) AS STRING), 20, '0') || CAST(id AS STRING) END END) FROM t")


def test_the_sortable_key_orders_like_duckdbs_struct_comparison():
    """Executed: the text key (as DuckDB runs the Snowflake form, through sqlglot) sorts
    instants before and after 1970 and ties on the timestamp like STRUCT comparison."""
    import duckdb
    rows = [("1969-12-31 23:59:59.999999", "b"), ("1970-01-01 00:00:00", "a"), ("2026-06-30 12:00:00", "a"),
            ("2026-06-30 12:00:00", "B"), ("0999-01-01 00:00:00", "z")]
    values = ", ".join(f"(TIMESTAMP '{ts}', '{m}')" for ts, m in rows)
    struct = sqlglot.parse_one(f"SELECT STRUCT_PACK(ts := ts, m := m) AS k FROM (VALUES {values}) AS t(ts, m)",
                               read="duckdb")
    text = sqlglot.transpile(lower(struct, "snowflake").sql("snowflake"), read="snowflake", write="duckdb")[0]
    connection = duckdb.connect()
    by_struct = [row[0] for row in connection.execute(struct.sql("duckdb") + " ORDER BY k").fetchall()]
    by_text = [row[0] for row in connection.execute(text + " ORDER BY k").fetchall()]
    assert [(k["ts"], k["m"]) for k in by_struct] == [
        connection.execute(f"SELECT ts, m FROM (VALUES {values}) AS t(ts, m) WHERE "
                           f"LPAD(CAST(EPOCH_US(ts) + 62135596800000000 AS TEXT), 20, '0') || m = ?", [k]).fetchone()
        for k in by_text]


@pytest.mark.parametrize("dialect", ["snowflake", "bigquery"])
def test_json_paths_and_casts_use_the_warehouses_forms(dialect):
    tree = sqlglot.parse_one("SELECT c ->> '$.traits.\"e-mail\"', TRY_CAST(x AS BOOLEAN), TRY_CAST(x AS BIGINT), "
                             "NULL FROM t", read="duckdb")
    tree.expressions[-1].replace(exp.ArraySlice(this=exp.column("l"), start=exp.Literal.number(1),
                                                end=exp.Literal.number(3)))  # the `unique` trait's list[1:n]
    text = lower(tree, dialect).sql(dialect)
    if dialect == "snowflake":
        assert "CAST(GET_PATH(c, '\"traits\".\"e-mail\"') AS VARCHAR)" in text and "ARRAY_SLICE(l, 0, 3)" in text
    else:
        assert "JSON_VALUE(c, '$.traits.\"e-mail\"')" in text and "WITH OFFSET AS _o WHERE _o < 3" in text
    assert "WHEN LOWER(x) IN ('true', 't', 'yes', 'y', '1') THEN TRUE" in text
    assert sqlglot.parse_one(text, read=dialect) is not None
