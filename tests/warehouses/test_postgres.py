"""PostgreSQL for real: the warehouse interface, the whole pipeline (`cdp load`, `cdp run`,
`cdp sync`), and the same traits and audiences as DuckDB on the same events.

Needs a server (see conftest.py); every test works in schemas of its own."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
import sqlglot
from sqlglot import exp

from cdp_warehouse.collect.loader import land_messages, load_files
from cdp_warehouse.errors import WarehouseError
from cdp_warehouse.runner import run
from cdp_warehouse.specs import load_project
from cdp_warehouse.warehouses import connect
from cdp_warehouse.warehouses.base import create_as, create_table
from cdp_warehouse.warehouses.postgres import PostgresWarehouse
from tests.cli.test_cli_validate_load import cdp, runner  # noqa: F401 (fixture)
from tests.conftest import REPO, identify, track
from tests.fakes import FakeBraze
from tests.warehouses.conftest import demo_halves

END = datetime(2026, 6, 30, tzinfo=UTC)  # the demo events precede it; every run is as of it
DEMO_EVENTS = 20_000


@pytest.fixture
def pg(postgres_dsn):
    warehouse = PostgresWarehouse.connect(postgres_dsn)
    yield warehouse
    warehouse.close()


def _schema(warehouse: PostgresWarehouse, name: str) -> None:
    warehouse.execute(exp.Create(this=exp.to_identifier(name, quoted=True), kind="SCHEMA", exists=True))


def _example(root: Path, warehouse_yaml: str, raw: str, models: str, *, stitch: bool = False,
             limits: str = "") -> Path:
    """The repo's example project (cdp.yaml, audiences/, tracking plan) on another warehouse;
    ``limits``: lines added to its ``identity.limits``."""
    root.mkdir(parents=True)
    shutil.copytree(REPO / "audiences", root / "audiences")
    shutil.copy(REPO / "tracking_plan.yaml", root / "tracking_plan.yaml")
    text = (REPO / "cdp.yaml").read_text()
    start, end = text.index("warehouse:\n"), text.index("schemas:\n")
    text = text[:start] + "warehouse:\n" + warehouse_yaml + text[end:]
    start, end = text.index("schemas:\n"), text.index("identity:\n")
    text = text[:start] + f"schemas: {{raw: {raw}, models: {models}}}\n" + text[end:]
    if stitch:
        text = text.replace("identity:\n", "identity:\n  stitch: true\n", 1)
    text = text.replace("  limits:\n", "  limits:\n" + limits, 1)
    (root / "cdp.yaml").write_text(text)
    return root


POSTGRES_YAML = "  type: postgres\n  dsn: ${CDP_TEST_POSTGRES_DSN}\n"
DUCKDB_YAML = "  type: duckdb\n  path: data/warehouse.duckdb\n"


@pytest.fixture(scope="module")
def demo_events(tmp_path_factory) -> list[Path]:
    """The demo's events in two halves (a second load extends what the first landed)."""
    return demo_halves(tmp_path_factory.mktemp("demo"), DEMO_EVENTS, END)



# ---------------------------------------------------------------- the interface


def test_insert_arrow_skips_known_keys_and_keeps_types(pg, pg_schemas):
    schema = pg_schemas("t")
    _schema(pg, schema)
    table = exp.table_("rows", db=schema, quoted=True)
    pg.execute(create_table(table, [("id", "text"), ("v", "text"), ("j", "json"), ("at", "timestamp"),
                                    ("n", "integer"), ("ok", "boolean")]))
    at = datetime(2026, 6, 30, 12, 0, 0, 123456)
    rows = pa.table({
        "id": ["a", "b", "c"], "v": ["x", "", None], "j": ['{"k": [1, "two"]}', None, "null"],
        "at": pa.array([at, None, at], pa.timestamp("us")), "n": pa.array([1, None, 3], pa.int32()),
        "ok": [True, None, False],
    })
    assert pg.insert_arrow(table, rows, skip_existing_key="id") == 3
    assert pg.insert_arrow(table, rows, skip_existing_key="id") == 0  # idempotent
    assert pg.insert_arrow(table, pa.table({"id": ["c", "d"], "v": ["new", "d"]}), skip_existing_key="id") == 1
    got = {row[0]: row[1:] for row in pg.fetch(exp.select("*").from_(table))}
    assert got == {"a": ("x", '{"k": [1, "two"]}', at, 1, True), "b": ("", None, None, None, None),
                   "c": (None, "null", at, 3, False), "d": ("d", None, None, None, None)}
    # jsonb, and text in code-point order whatever the database's locale
    kinds = {name: (kind, collation) for name, kind, collation in pg.fetch(
        "SELECT column_name, data_type, collation_name FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = 'rows'", [schema])}
    assert kinds["j"] == ("jsonb", None) and kinds["at"] == ("timestamp without time zone", None)
    assert kinds["id"] == ("text", "C")
    assert pg.insert_arrow(table, pa.table({"id": ["B", "é", "Z"]})) == 3
    ordered = [row[0] for row in pg.fetch(exp.select("id").from_(table).order_by("id"))]
    assert ordered == ["B", "Z", "a", "b", "c", "d", "é"]
    assert pg.columns(schema, "rows") == ["id", "v", "j", "at", "n", "ok"] and pg.columns(schema, "none") == []


def test_transactions_commit_together_or_not_at_all(pg, pg_schemas):
    schema = pg_schemas("t")
    _schema(pg, schema)
    table = exp.table_("kept", db=schema, quoted=True)
    with pytest.raises(RuntimeError), pg.transaction():
        pg.execute(create_table(table, [("id", "text")]))
        pg.insert_arrow(table, pa.table({"id": ["a"]}))
        raise RuntimeError("boom")
    assert not pg.table_exists(schema, "kept")  # DDL rolled back too
    with pg.transaction(rollback=True):  # previews: never commits
        pg.execute(create_table(table, [("id", "text")]))
        pg.insert_arrow(table, pa.table({"id": ["a"]}))
        assert pg.fetch(exp.select("id").from_(table)) == [("a",)]
    assert not pg.table_exists(schema, "kept")
    with pytest.raises(WarehouseError, match="division by zero"), pg.transaction():
        pg.execute("SELECT 1 / 0")
    assert pg.fetch("SELECT 1") == [(1,)]  # the connection is usable after a failed transaction


def test_replacement_is_atomic_and_temporary_tables_come_first(pg, pg_schemas):
    schema = pg_schemas("t")
    _schema(pg, schema)
    table = exp.table_("numbers", db=schema, quoted=True)
    pg.execute(create_as(table, exp.select(exp.alias_(exp.Literal.number(1), "n"))))
    # A replacement may read the table it replaces (the identity state does).
    pg.execute(create_as(table.copy(), exp.select(exp.alias_(exp.column("n") + 1, "n")).from_(table.copy())))
    assert pg.fetch(exp.select("n").from_(table)) == [(2,)]
    assert pg.fetch("SELECT table_name FROM information_schema.tables WHERE table_schema = %s", [schema]) == [("numbers",)]

    # An unqualified name is the session's temporary table, even with a permanent one of the
    # same name on the search path; dropping it never drops the permanent one.
    pg.execute(f'SET search_path = "{schema}"')
    pg.execute(create_as(exp.to_table("numbers"), exp.select(exp.alias_(exp.Literal.number(7), "n")), temporary=True))
    assert pg.fetch(exp.select("n").from_("numbers")) == [(7,)]
    other = pg.duplicate()
    try:
        other.execute(f'SET search_path = "{schema}"')
        assert other.fetch(exp.select("n").from_("numbers")) == [(2,)]  # another session's temporary table
    finally:
        other.close()
    pg.execute(exp.Drop(tables=[exp.to_table("numbers")], kind="TABLE", exists=True))
    pg.execute(exp.Drop(tables=[exp.to_table("numbers")], kind="TABLE", exists=True))
    assert pg.fetch(exp.select("n").from_("numbers")) == [(2,)]


def test_fetch_arrow_parameters_and_explain(pg):
    table = pg.fetch_arrow(sqlglot.parse_one(
        "SELECT 1::bigint AS n, 'x' AS s, 1.5::double precision AS d, TRUE AS b, "
        "'2026-06-30 01:02:03'::timestamp AS t, ARRAY['a', 'b'] AS l", read="postgres"))
    assert table.schema.types == [pa.int64(), pa.string(), pa.float64(), pa.bool_(), pa.timestamp("us"),
                                  pa.list_(pa.string())]
    assert table.to_pylist() == [{"n": 1, "s": "x", "d": 1.5, "b": True, "t": datetime(2026, 6, 30, 1, 2, 3),
                                  "l": ["a", "b"]}]
    # `?` placeholders of trees, next to a `%` operator
    query = exp.select(exp.Mod(this=exp.Placeholder(), expression=exp.Literal.number(4)), exp.Literal.string("50%"))
    assert pg.fetch(query, [10]) == [(2, "50%")]
    assert "Result" in pg.explain(exp.select(exp.Literal.number(1)))


# ---------------------------------------------------------------- the pipeline


def test_load_run_and_sync_the_example_project_on_postgres(runner, tmp_path, pg_schemas, demo_events,  # noqa: F811
                                                            postgres_dsn):
    root = _example(tmp_path / "example", POSTGRES_YAML, pg_schemas("raw"), pg_schemas("cdp"))
    with FakeBraze() as braze:
        env = {"CDP_PROJECT": str(root), "CDP_TEST_POSTGRES_DSN": postgres_dsn, "CDP_AS_OF": END.isoformat(),
               "BRAZE_REST_ENDPOINT": braze.url, "BRAZE_API_KEY": braze.api_key}
        loaded = cdp(runner, "load", *demo_events, env=env)
        assert loaded.exit_code == 0, loaded.output
        assert f"{DEMO_EVENTS:,} landed" in loaded.output
        again = cdp(runner, "load", demo_events[0], env=env)  # idempotent on message_id
        assert "0 landed" in again.output and f"{DEMO_EVENTS // 2:,} duplicates skipped" in again.output
        ran = cdp(runner, "run", env=env)
        assert ran.exit_code == 0, ran.output
        assert "churn_risk" in ran.output and "high_value_user" in ran.output

        explained = cdp(runner, "run", "--explain", env=env)
        assert explained.exit_code == 0, explained.output
        assert explained.output.count("(postgres EXPLAIN)") == 4 and "cost=" in explained.output

        synced = cdp(runner, "sync", "churn_risk", "--to", "braze", env=env)
        assert synced.exit_code == 0, synced.output
        project = load_project(root, environ={"CDP_TEST_POSTGRES_DSN": postgres_dsn})
        with connect(project) as warehouse:
            expected = {row[0] for row in warehouse.fetch(
                f'SELECT p.user_id FROM "{project.models_schema}".audience_members AS m '
                f'JOIN "{project.models_schema}".profiles AS p USING (profile_id) '
                "WHERE m.audience = 'churn_risk' AND m.split <> 'holdout' AND p.user_id IS NOT NULL")}
        members = {u.external_id for u in braze.users.values() if u.attributes.get("churn_risk") is True}
        assert members == expected and members
        sent = len(braze.requests)
        assert cdp(runner, "sync", "churn_risk", "--to", "braze", env=env).exit_code == 0
        assert len(braze.requests) == sent  # nothing changed, nothing sent


TABLES = ("profiles", "profile_traits", "audience_members", "audience_membership")


def _tables(project, warehouse, names) -> dict[str, list[tuple]]:
    """Every row of each table, columns by name, floats rounded, in a canonical order."""
    result = {}
    for name in names:
        rows = warehouse.fetch_dicts(exp.select("*").from_(exp.table_(name, db=project.models_schema, quoted=True)))
        result[name] = sorted((tuple(sorted((k, round(v, 9) if isinstance(v, float) else v) for k, v in row.items()))
                               for row in rows), key=repr)
    return result


def computed_in_halves(projects: dict, halves: list[Path], names: tuple[str, ...]) -> dict[str, dict]:
    """Per warehouse kind: load the first half, run a week before END, load the second half,
    run at END (stitching then extends its state); every row of ``names``."""
    computed = {}
    for kind, project in projects.items():
        with connect(project) as warehouse:
            assert warehouse.dialect == kind
            load_files(project, warehouse, [halves[0]])
            run(project, warehouse, END - timedelta(days=7))
            load_files(project, warehouse, [halves[1]])
            result = run(project, warehouse, END)
            if project.config.identity.stitch:
                assert not result.identity_rebuilt  # the second run extended the first's state
            computed[kind] = _tables(project, warehouse, names)
    return computed


@pytest.mark.parametrize(("stitch", "limits"), [(False, ""), (True, ""), (True, "    email: 1\n    anonymous_id: 1\n")],
                         ids=["coalesce", "stitched", "stitched_with_limits"])
def test_postgres_computes_what_duckdb_computes(tmp_path, pg_schemas, demo_events, postgres_dsn, stitch, limits):
    """The example project on the demo events, loaded in two halves with a run after each
    (so stitching also extends its state incrementally): every table equal, row by row."""
    environ = {"CDP_TEST_POSTGRES_DSN": postgres_dsn}
    projects = {
        "duckdb": load_project(_example(tmp_path / "duckdb", DUCKDB_YAML, "raw", "cdp", stitch=stitch, limits=limits),
                               environ=environ),
        "postgres": load_project(_example(tmp_path / "postgres", POSTGRES_YAML, pg_schemas("raw"), pg_schemas("cdp"),
                                          stitch=stitch, limits=limits), environ=environ),
    }
    names = TABLES + (("identity_map",) if stitch else ())
    computed = computed_in_halves(projects, demo_events, names)
    for name in names:
        duckdb_rows, postgres_rows = computed["duckdb"][name], computed["postgres"][name]
        assert len(duckdb_rows) > 10, name
        assert postgres_rows == duckdb_rows, name


def test_committed_postgres_sql_runs_on_postgres(tmp_path, pg_schemas, postgres_dsn):
    """sql/postgres/*.sql as committed (schemas renamed to this test's) computes what `cdp
    run` computes."""
    raw, models = pg_schemas("raw"), pg_schemas("cdp")
    project = load_project(_example(tmp_path / "example", POSTGRES_YAML, raw, models),
                           environ={"CDP_TEST_POSTGRES_DSN": postgres_dsn})
    now = datetime.now(UTC).replace(microsecond=0)
    day = timedelta(days=1)

    def at(delta: timedelta) -> str:
        return (now - delta).isoformat()

    messages = [
        identify("hv", at(50 * day), email="HV@example.com", plan="enterprise", last_name="Vale"),
        *[track("hv", "Report Generated", at(k * day + timedelta(hours=1)), report_type="usage") for k in range(1, 12)],
        track("hv", "Payment Processed", at(5 * day), revenue="120.5"),
        track("hv", "Payment Processed", at(6 * day), revenue="n/a"),  # not a number: ignored
        identify("cr", at(80 * day), plan="growth"),
        track("cr", "Report Generated", at(45 * day), report_type="custom"),
        track("cr", "Subscription Upgraded", at(44 * day), triggered_by="self-service"),
        track(None, "Dashboard Viewed", at(3 * day), anonymous="anon-1"),
    ]
    renamed = {"raw": raw, "cdp": models}

    def golden(path: Path) -> exp.Query:
        tree = sqlglot.parse_one(path.read_text(), read="postgres")
        for table in tree.find_all(exp.Table):
            if table.db in renamed:
                table.set("db", exp.to_identifier(renamed[table.db], quoted=True))
        return tree

    with connect(project) as warehouse:
        land_messages(project, warehouse, messages)
        run(project, warehouse, now)
        expected = _tables(project, warehouse, ("profiles", "profile_traits"))
        def members(source: exp.Expression) -> list[tuple]:
            return warehouse.fetch(exp.select("audience", "profile_id", "split").from_(source).order_by(
                "audience", "profile_id"))

        expected_members = members(exp.table_("audience_members", db=models, quoted=True))
        assert {row[0] for row in expected_members} == {"high_value_user", "churn_risk"}
        for path in sorted((REPO / "sql" / "postgres").glob("*.sql")):
            table = path.stem.split("_", 1)[1]
            table = "_profile_aggregates" if table == "profile_aggregates" else table
            if table == "audience_members":
                actual_members = members(golden(path).subquery("m"))
                continue
            warehouse.execute(create_as(exp.table_(table, db=models, quoted=True), golden(path)))
        assert _tables(project, warehouse, ("profiles", "profile_traits")) == expected
        assert actual_members == expected_members


def test_a_replaced_table_with_new_columns_reads_on_a_long_lived_connection(pg, pg_schemas):
    """Bug guarded against: psycopg prepares a statement run 5 times; once the table it reads
    is replaced with more columns, PostgreSQL refuses the prepared `SELECT *` ("cached plan
    must not change result type"). A new trait is exactly that for `profile_traits`."""
    schema = pg_schemas("t")
    _schema(pg, schema)
    table = exp.table_("traits", db=schema, quoted=True)
    pg.execute(create_as(table, exp.select(exp.alias_(exp.Literal.number(1), "a"))))
    for _ in range(6):
        assert pg.fetch(exp.select("*").from_(table.copy())) == [(1,)]
    pg.execute(create_as(table.copy(), exp.select(exp.alias_(exp.Literal.number(1), "a"),
                                                  exp.alias_(exp.Literal.number(2), "b"))))
    assert pg.fetch(exp.select("*").from_(table.copy())) == [(1, 2)]
