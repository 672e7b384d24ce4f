"""The `cdp` command line (spec section 8): validate, load, compile, init + run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import sqlglot
from click.testing import CliRunner
from sqlglot import exp

from cdp_warehouse.cli import main
from cdp_warehouse.errors import SpecError
from cdp_warehouse.specs import load_project
from tests.conftest import REPO, write_project

BROKEN_MAIN = """\
traits:
  - name: reports_30d
    count:
      event: Report Generated
      windw: 30d
audiences:
  - name: power_users
    where: reports_3d > 10
"""

BROKEN_EXTRA = """\
traits:
  - name: revenue
    sum: {event: Payment Processed}
audiences:
  - name: spenders
    where: events('*', '30x') > 0
    splits: {treatment: 10, holdout: 10}
"""

LANDING_COLUMNS = {"message_id", "type", "event", "user_id", "anonymous_id", "group_id", "previous_id",
                   "timestamp", "received_at", "sent_at", "properties", "traits", "context", "source"}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def cdp(runner: CliRunner, *args: str, env: dict | None = None):
    environment = {"CDP_AS_OF": None, "CDP_PROJECT": None, "COLUMNS": None}
    environment.update(env or {})
    return runner.invoke(main, [str(a) for a in args], env=environment, catch_exceptions=False)


def example_copy(tmp_path: Path) -> Path:
    """The repo's example project without its data folder (so nothing touches the repo)."""
    target = tmp_path / "example"
    target.mkdir()
    shutil.copy(REPO / "cdp.yaml", target / "cdp.yaml")
    shutil.copytree(REPO / "audiences", target / "audiences")
    if (REPO / "tracking_plan.yaml").exists():
        shutil.copy(REPO / "tracking_plan.yaml", target / "tracking_plan.yaml")
    return target


# ---------------------------------------------------------------- validate


def test_validate_example_project_prints_ok(runner):
    result = cdp(runner, "--project", REPO, "validate")
    assert result.exit_code == 0, result.output
    assert "ok" in result.stdout
    assert "error" not in result.output


def test_validate_finds_the_project_through_cdp_project(runner):
    result = cdp(runner, "validate", env={"CDP_PROJECT": str(REPO)})
    assert result.exit_code == 0, result.output
    assert "ok" in result.stdout


def test_validate_without_a_project_explains(runner, tmp_path):
    result = cdp(runner, "--project", tmp_path, "validate")
    assert result.exit_code == 1
    assert "cdp.yaml" in result.output
    assert "Traceback" not in result.output


def test_validate_broken_project_prints_every_problem(runner, tmp_path):
    root = write_project(tmp_path / "broken", BROKEN_MAIN, extra=BROKEN_EXTRA)
    with pytest.raises(SpecError) as info:
        load_project(root, environ={})
    expected = info.value.problems
    assert len(expected) >= 4

    result = cdp(runner, "--project", root, "validate")
    assert result.exit_code == 1
    assert "ok" not in result.stdout
    # whitespace-normalised: line wrapping is checked by test_validate_prints_each_problem_on_one_line
    output = " ".join(result.output.split())
    for problem in expected:
        assert " ".join(f"{problem.file}:{problem.line}: {problem.key}: {problem.message}".split()) in output
    assert "audiences/main.yaml:5: traits[0].count.windw: unknown key 'windw'" in output
    assert "audiences/main.yaml:8: audiences[0].where: unknown trait 'reports_3d'" in output
    assert "audiences/extra.yaml:3: traits[0].sum.property: missing required key 'property'" in output
    assert "audiences/extra.yaml:7: audiences[0].splits:" in output
    assert f"{len(expected)} error" in output


def test_validate_prints_each_problem_on_one_line(runner, tmp_path):
    # Editors and CI parse `file:line: key: message`; a long problem must not be wrapped onto
    # a second line (the output is not a terminal here, as in CI logs or `2> errors.txt`).
    root = write_project(tmp_path / "long", """\
        audiences:
          - name: power_users_of_the_reporting_feature
            where: reports_generated_in_the_last_thirty_days_on_any_device > 10
        """)
    with pytest.raises(SpecError) as info:
        load_project(root, environ={})
    result = cdp(runner, "--project", root, "validate")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    for problem in info.value.problems:
        assert len(str(problem)) > 80
        assert str(problem) in lines, result.output


def test_validate_reports_yaml_syntax_errors_with_file_and_line(runner, tmp_path):
    root = write_project(tmp_path / "syntax", """\
        traits:
          - name: plan
            description: oops: a colon
            trait: {trait: plan}
        """)
    result = cdp(runner, "--project", root, "validate")
    assert result.exit_code == 1
    assert "audiences/main.yaml:3:" in result.output
    assert "YAML" in result.output


def test_validate_missing_warehouse_variable(runner, tmp_path):
    root = write_project(tmp_path / "env", "traits: []\n", """\
        name: test
        warehouse:
          type: duckdb
          path: ${CDP_TEST_MISSING_DB}
        """)
    result = cdp(runner, "--project", root, "validate", env={"CDP_TEST_MISSING_DB": None})
    assert result.exit_code == 1
    assert "cdp.yaml:" in result.output
    assert "CDP_TEST_MISSING_DB" in result.output


def test_validate_does_not_need_destination_credentials(runner, tmp_path):
    root = example_copy(tmp_path)
    unset = {name: None for name in ("BRAZE_API_KEY", "BRAZE_REST_ENDPOINT", "INTERCOM_TOKEN",
                                     "SALESFORCE_INSTANCE_URL", "SALESFORCE_CLIENT_ID",
                                     "SALESFORCE_CLIENT_SECRET", "SLACK_WEBHOOK_URL")}
    result = cdp(runner, "--project", root, "validate", env=unset)
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------- load


def test_load_prints_counts(runner, tmp_path):
    root = example_copy(tmp_path)
    path = tmp_path / "events.jsonl"
    messages = [
        {"type": "track", "messageId": "m1", "userId": "u1", "event": "Report Generated",
         "timestamp": "2026-06-20T10:00:00Z"},
        {"type": "track", "messageId": "m1", "userId": "u1", "event": "Report Generated",
         "timestamp": "2026-06-20T10:00:00Z"},
        {"type": "identify", "messageId": "m2", "userId": "u1", "traits": {"plan": "pro"},
         "timestamp": "2026-06-20T09:00:00Z"},
        {"type": "page", "messageId": "m3", "anonymousId": "a1", "name": "Home", "timestamp": "2026-06-20T08:00:00Z"},
        {"type": "track", "messageId": "m4", "event": "Orphan"},
    ]
    path.write_text("\n".join(json.dumps(m) for m in messages) + "\nnot json\n")
    result = cdp(runner, "--project", root, "load", path)
    assert result.exit_code == 0, result.output
    assert "read 6 messages" in result.stdout
    assert "3 landed" in result.stdout
    assert "1 duplicates skipped" in result.stdout
    assert "2 rejected" in result.stdout
    assert f"{path}:5" in "".join(result.output.split())  # the rejected message's origin
    assert "rejected_messages" in result.output

    again = cdp(runner, "--project", root, "load", path)
    assert again.exit_code == 0, again.output
    assert "0 landed" in again.stdout
    assert "4 duplicates skipped" in again.stdout


def test_load_with_source(runner, tmp_path):
    root = example_copy(tmp_path)
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps({"type": "track", "messageId": "m1", "userId": "u1", "event": "A",
                                "timestamp": "2026-06-20T10:00:00Z"}) + "\n")
    result = cdp(runner, "--project", root, "load", "--source", "backfill", path)
    assert result.exit_code == 0, result.output
    assert "1 landed" in result.stdout
    import duckdb

    with duckdb.connect(str(root / "data" / "acme.duckdb"), read_only=True) as connection:
        assert connection.execute("SELECT source FROM raw.events").fetchall() == [("backfill",)]


def test_load_missing_file_fails_cleanly(runner, tmp_path):
    root = example_copy(tmp_path)
    result = cdp(runner, "--project", root, "load", tmp_path / "nope.jsonl")
    assert result.exit_code != 0
    assert "nope.jsonl" in result.output
    assert "Traceback" not in result.output


# ---------------------------------------------------------------- compile


def _statements(output: str, dialect: str) -> list[exp.Expression]:
    return [tree for tree in sqlglot.parse(output, read=dialect) if tree is not None]


def test_compile_snowflake_prints_sql(runner):
    result = cdp(runner, "--project", REPO, "compile", "--dialect", "snowflake")
    assert result.exit_code == 0, result.output
    assert "SELECT" in result.stdout
    assert "snowflake" in result.stdout.lower()
    statements = _statements(result.stdout, "snowflake")
    assert len(statements) >= 3
    text = result.stdout
    for name in ("reports_30d", "lifetime_revenue", "churn_risk", "high_value_user"):
        assert name in text


def test_compile_dialects_differ(runner):
    snowflake = cdp(runner, "--project", REPO, "compile", "--dialect", "snowflake")
    duckdb_sql = cdp(runner, "--project", REPO, "compile", "--dialect", "duckdb")
    assert snowflake.exit_code == duckdb_sql.exit_code == 0
    assert snowflake.stdout != duckdb_sql.stdout


def test_compile_with_as_of_pins_the_instant(runner):
    result = cdp(runner, "--project", REPO, "compile", "--dialect", "snowflake", "--as-of", "2026-06-30")
    assert result.exit_code == 0, result.output
    assert "2026-06-30" in result.stdout
    assert "CURRENT_TIMESTAMP" not in result.stdout.upper()


def test_compile_snowflake_quotes_landing_columns_consistently(runner):
    # The landing table's columns are created as quoted lower-case identifiers ("traits"); in
    # Snowflake an unquoted `traits` means TRAITS, a different (missing) column.
    result = cdp(runner, "--project", REPO, "compile", "--dialect", "snowflake")
    assert result.exit_code == 0, result.output
    unquoted = {
        column.name
        for tree in _statements(result.stdout, "snowflake")
        for column in tree.find_all(exp.Column)
        if isinstance(column.this, exp.Identifier) and not column.this.quoted and column.name in LANDING_COLUMNS
    }
    assert unquoted == set()


def test_compile_out_writes_files(runner, tmp_path):
    result = cdp(runner, "--project", REPO, "compile", "--dialect", "snowflake", "--out", tmp_path / "sql")
    assert result.exit_code == 0, result.output
    written = sorted((tmp_path / "sql").rglob("*.sql"))
    assert written
    assert all("snowflake" in str(path.relative_to(tmp_path / "sql")) for path in written)


def test_compile_broken_project_fails(runner, tmp_path):
    root = write_project(tmp_path / "broken", BROKEN_MAIN)
    result = cdp(runner, "--project", root, "compile", "--dialect", "snowflake")
    assert result.exit_code == 1
    assert "audiences/main.yaml:" in result.output


# ---------------------------------------------------------------- init + run


def test_init_creates_a_project_that_validates_and_runs(runner, tmp_path):
    target = tmp_path / "new_project"
    result = cdp(runner, "init", target)
    assert result.exit_code == 0, result.output
    assert (target / "cdp.yaml").is_file()
    assert list((target / "audiences").glob("*.yaml"))

    validated = cdp(runner, "--project", target, "validate")
    assert validated.exit_code == 0, validated.output
    assert "ok" in validated.stdout

    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(json.dumps(m) for m in [
        {"type": "identify", "messageId": "i1", "userId": "u1", "traits": {"plan": "pro"},
         "timestamp": "2026-06-01T00:00:00Z"},
        {"type": "track", "messageId": "t1", "userId": "u1", "event": "Report Generated",
         "timestamp": "2026-06-20T00:00:00Z"},
        {"type": "track", "messageId": "t2", "userId": "u2", "event": "Report Generated",
         "timestamp": "2026-04-01T00:00:00Z"},
    ]) + "\n")
    loaded = cdp(runner, "--project", target, "load", events)
    assert loaded.exit_code == 0, loaded.output
    assert "3 landed" in loaded.stdout

    ran = cdp(runner, "--project", target, "run", "--as-of", "2026-06-30")
    assert ran.exit_code == 0, ran.output
    assert "2026-06-30" in ran.stdout
    assert "2 profiles" in ran.stdout
    assert "active_users" in ran.stdout


def test_init_project_runs_on_an_empty_warehouse(runner, tmp_path):
    target = tmp_path / "empty"
    assert cdp(runner, "init", target).exit_code == 0
    ran = cdp(runner, "--project", target, "run", "--as-of", "2026-06-30")
    assert ran.exit_code == 0, ran.output
    assert "0 profiles" in ran.stdout


def test_run_takes_as_of_from_cdp_as_of(runner, tmp_path):
    target = tmp_path / "p"
    assert cdp(runner, "init", target).exit_code == 0
    ran = cdp(runner, "--project", target, "run", env={"CDP_AS_OF": "2026-06-30T12:00:00+02:00"})
    assert ran.exit_code == 0, ran.output
    assert "2026-06-30T10:00:00+00:00" in ran.stdout


def test_init_refuses_an_existing_project(runner, tmp_path):
    target = tmp_path / "p"
    assert cdp(runner, "init", target).exit_code == 0
    before = (target / "cdp.yaml").read_text()
    again = cdp(runner, "init", target)
    assert again.exit_code == 1
    assert "already exists" in again.output
    assert (target / "cdp.yaml").read_text() == before


def test_run_bad_as_of_fails_cleanly(runner, tmp_path):
    target = tmp_path / "p"
    assert cdp(runner, "init", target).exit_code == 0
    ran = cdp(runner, "--project", target, "run", "--as-of", "last tuesday")
    assert ran.exit_code == 1
    assert "last tuesday" in ran.output
    assert "Traceback" not in ran.output
