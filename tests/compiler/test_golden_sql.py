"""The committed sql/ is the compiled example project; it must be current, parse back in
its own dialect, and (for DuckDB) compute what `cdp run` computes."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta

import pytest
import sqlglot

from cdp_warehouse.collect.loader import land_messages
from cdp_warehouse.compiler.plan import compile_project
from cdp_warehouse.compiler.render import DIALECTS, render_plan
from cdp_warehouse.runner import run
from cdp_warehouse.specs import load_project
from cdp_warehouse.warehouses import connect
from tests.conftest import REPO, identify, track

EXAMPLE = load_project(REPO, environ={})
PLANS = {dialect: compile_project(EXAMPLE, dialect=dialect) for dialect in DIALECTS}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_committed_sql_is_current(dialect):
    expected = render_plan(PLANS[dialect], EXAMPLE.models_schema)
    folder = REPO / "sql" / dialect
    committed = {path.name: path.read_text() for path in sorted(folder.glob("*.sql"))}
    assert committed == expected, f"sql/{dialect} is stale: run `make compile` and commit the result"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_compiled_sql_parses_back_in_its_dialect(dialect):
    for name, text in render_plan(PLANS[dialect], EXAMPLE.models_schema).items():
        statements = sqlglot.parse(text, read=dialect)
        assert [s for s in statements if s is not None], name


def test_duckdb_golden_files_compute_what_cdp_run_computes(tmp_path):
    """Execute sql/duckdb/*.sql as written and compare every table with `cdp run`'s."""
    for name in ("cdp.yaml", "tracking_plan.yaml", "audiences"):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy
        copy(REPO / name, tmp_path / name)
    project = load_project(tmp_path, environ={})
    now = datetime.now(UTC).replace(microsecond=0)
    day = timedelta(days=1)

    def at(delta: timedelta) -> str:
        return (now - delta).isoformat()

    messages = [
        identify("hv", at(50 * day), email="HV@example.com", plan="enterprise", last_name="Vale"),
        *[track("hv", "Report Generated", at(k * day + 3600 * timedelta(seconds=1)), report_type="usage")
          for k in range(1, 12)],
        track("hv", "Payment Processed", at(5 * day), revenue="120.5"),
        identify("cr", at(80 * day), plan="growth"),
        track("cr", "Report Generated", at(45 * day), report_type="custom"),
        track("cr", "Subscription Upgraded", at(44 * day), triggered_by="self-service"),
        track(None, "Dashboard Viewed", at(3 * day), anonymous="anon-1"),
    ]
    with connect(project) as warehouse:
        land_messages(project, warehouse, messages)
        run(project, warehouse, now)
        expected = {table: sorted(warehouse.fetch(f"SELECT * FROM cdp.{table}"), key=repr)
                    for table in ("profiles", "profile_traits")}
        expected_members = sorted(warehouse.fetch("SELECT audience, profile_id, split FROM cdp.audience_members"))
        assert {row[0] for row in expected_members} == {"high_value_user", "churn_risk"}

        for path in sorted((REPO / "sql" / "duckdb").glob("*.sql")):
            table = path.stem.split("_", 1)[1]
            table = "_profile_aggregates" if table == "profile_aggregates" else table
            if table == "audience_members":
                actual_members = sorted(warehouse.fetch(
                    f"SELECT audience, profile_id, split FROM ({path.read_text().rstrip().rstrip(';')})"))
                continue
            warehouse.execute(f"CREATE OR REPLACE TABLE cdp.{table} AS {path.read_text().rstrip().rstrip(';')}")
        for table, rows in expected.items():
            assert sorted(warehouse.fetch(f"SELECT * FROM cdp.{table}"), key=repr) == rows, table
        assert actual_members == expected_members
