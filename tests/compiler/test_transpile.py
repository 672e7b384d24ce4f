"""Compile once, assert per dialect, parse back in that dialect (the sqlglot way)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlglot
from sqlglot import exp

from cdp_warehouse.compiler.fragments import parse_fragment, rewrite_event_fragment
from cdp_warehouse.compiler.plan import compile_project
from cdp_warehouse.compiler.render import DIALECTS
from cdp_warehouse.specs import load_project
from tests.conftest import write_project

WHERE = rewrite_event_fragment(parse_fragment("properties.amount > 10 AND context.page.url = 'x' AND properties.a / properties.b > 1"))

EXPECTED_WHERE = {
    'duckdb': 'TRY_CAST("properties" ->> \'$.amount\' AS DOUBLE) > 10 AND ("context" ->> \'$.page.url\') = \'x\' AND TRY_CAST("properties" ->> \'$.a\' AS DOUBLE) / NULLIF(TRY_CAST("properties" ->> \'$.b\' AS DOUBLE), 0) > 1',
    'snowflake': 'TRY_CAST(JSON_EXTRACT_PATH_TEXT("properties", \'amount\') AS DOUBLE) > 10 AND JSON_EXTRACT_PATH_TEXT("context", \'page.url\') = \'x\' AND TRY_CAST(JSON_EXTRACT_PATH_TEXT("properties", \'a\') AS DOUBLE) / NULLIF(TRY_CAST(JSON_EXTRACT_PATH_TEXT("properties", \'b\') AS DOUBLE), 0) > 1',
    'bigquery': "SAFE_CAST(JSON_EXTRACT_SCALAR(`properties`, '$.amount') AS FLOAT64) > 10 AND JSON_EXTRACT_SCALAR(`context`, '$.page.url') = 'x' AND SAFE_CAST(JSON_EXTRACT_SCALAR(`properties`, '$.a') AS FLOAT64) / NULLIF(SAFE_CAST(JSON_EXTRACT_SCALAR(`properties`, '$.b') AS FLOAT64), 0) > 1",
}


@pytest.mark.parametrize("dialect", sorted(EXPECTED_WHERE))
def test_json_paths_numbers_and_division_per_dialect(dialect):
    assert WHERE.sql(dialect) == EXPECTED_WHERE[dialect]
    assert sqlglot.parse_one(EXPECTED_WHERE[dialect], read=dialect) is not None


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    root = write_project(tmp_path_factory.mktemp("p"), """
        traits:
          - name: orders_7d
            count: {event: [Order Completed, Order Refunded], window: 7d}
          - name: last_kind
            last: {event: "*", property: kind}
          - name: kinds
            unique: {property: kind, limit: 3}
          - name: top_kind
            most_frequent: {property: kind}
          - name: active_days
            days_active: {window: 60d..30d}
        audiences:
          - name: buyers
            where: orders_7d > 0 AND events_where('Order Completed', '2h', 'properties.total >= 100') > 0
            splits: {a: 50, b: 50}
    """)
    project = load_project(root, environ={})
    return {dialect: compile_project(project, datetime(2026, 6, 30, tzinfo=UTC), dialect=dialect) for dialect in DIALECTS}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_model_parses_back(plans, dialect):
    for model in plans[dialect].models:
        text = model.select.sql(dialect=dialect)
        assert sqlglot.parse_one(text, read=dialect) is not None, model.table


@pytest.mark.parametrize("dialect", DIALECTS)
def test_fused_pass_is_one_group_by_over_the_events(plans, dialect):
    aggregates = plans[dialect].model("_profile_aggregates").select
    events_ctes = [cte for cte in aggregates.find_all(exp.CTE) if cte.alias == "aggregates"]
    assert len(events_ctes) == 1
    grouped = events_ctes[0].this
    names = [projection.alias for projection in grouped.expressions]
    assert {"orders_7d", "last_kind", "kinds", "active_days"} <= set(names)
    assert any(name.startswith("_events_") for name in names)  # the audience's events_where call
    assert [table.name for table in grouped.find_all(exp.Table)] == ["events"]


@pytest.mark.parametrize(
    "dialect, fragment",
    [
        ("duckdb", "INTERVAL '7' DAY"),
        ("snowflake", "INTERVAL '7 DAY'"),
        ("postgres", "INTERVAL '7 DAY'"),
        ("bigquery", "INTERVAL '7' DAY"),
    ],
)
def test_windows_are_interval_arithmetic_on_the_as_of(plans, dialect, fragment):
    assert fragment in plans[dialect].model("_profile_aggregates").select.sql(dialect=dialect)


def test_days_active_is_a_bitmap_on_duckdb_and_a_distinct_count_elsewhere(plans):
    duckdb_sql = plans["duckdb"].model("_profile_aggregates").select.sql(dialect="duckdb")
    assert "BIT_COUNT(BIT_OR(CASE WHEN" in duckdb_sql
    for dialect in ("snowflake", "bigquery", "postgres"):
        text = plans[dialect].model("_profile_aggregates").select.sql(dialect=dialect)
        assert "COUNT(DISTINCT CASE WHEN" in text and "BIT_COUNT" not in text, dialect
