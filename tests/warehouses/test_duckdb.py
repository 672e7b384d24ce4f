"""The DuckDB warehouse's own behaviour: `cdp run --explain` and the capability flags."""

from __future__ import annotations

import json

from cdp_warehouse.specs import load_project
from cdp_warehouse.warehouses import WAREHOUSES, connect
from tests.cli.test_cli_validate_load import cdp, example_copy, runner  # noqa: F401 (fixture)
from tests.conftest import track


def test_run_explain_prints_each_model_and_keeps_nothing(runner, tmp_path):  # noqa: F811
    root = example_copy(tmp_path)
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(track("u1", "Report Generated", "2026-06-29T10:00:00Z", report_type="usage")) + "\n")
    env = {"CDP_PROJECT": str(root), "CDP_AS_OF": "2026-06-30"}
    assert cdp(runner, "load", events, env=env).exit_code == 0
    result = cdp(runner, "run", "--explain", env=env)
    assert result.exit_code == 0, result.output
    assert result.output.count("(duckdb EXPLAIN)") == 4
    for model in ("profiles", "_profile_aggregates", "profile_traits", "audience_members"):
        assert f"-- {model}\n" in result.output
    assert "Hash Group By" in result.output and "~1 row" in result.output  # estimated cardinality
    project = load_project(root, environ={})
    with connect(project) as warehouse:
        assert not warehouse.table_exists(project.models_schema, "profiles")  # rolled back


def test_capability_flags():
    duckdb, postgres = WAREHOUSES["duckdb"], WAREHOUSES["postgres"]
    assert duckdb.single_writer and not postgres.single_writer
    assert duckdb.struct_values and not postgres.struct_values
    assert duckdb.dialect == "duckdb" and postgres.dialect == "postgres"
