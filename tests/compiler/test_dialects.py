"""`compiler.dialects.lower`: DuckDB's vocabulary rewritten for PostgreSQL, DuckDB untouched.
(Whether the rewritten SQL computes the same rows is tests/warehouses/test_postgres.py.)"""

from __future__ import annotations

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
