"""Snowflake on fakesnow (Snowflake SQL executed on DuckDB): the warehouse interface, `cdp
load` through a stage, `cdp run` computing the same tables as DuckDB on the same events, `cdp
sync` sending the fake destinations what it sends from DuckDB, `cdp run --explain` and `cdp
preview` keeping nothing.

fakesnow runs what the adapter sends through snowflake-connector-python, so these tests cover
the SQL text and the connector calls, not Snowflake's own semantics (docs/warehouses/snowflake.md
lists what fakesnow cannot do)."""

from __future__ import annotations

import json
import re
import warnings
from datetime import datetime, timedelta

import pyarrow as pa
import pytest
from sqlglot import exp

from cdp_warehouse.errors import WarehouseError
from cdp_warehouse.specs import load_project
from cdp_warehouse.warehouses import connect
from cdp_warehouse.warehouses.base import create_as, create_table
from cdp_warehouse.warehouses.snowflake import SnowflakeWarehouse, connect_arguments
from tests.cli.test_cli_validate_load import cdp, runner  # noqa: F401 (fixture)
from tests.conftest import identify, track
from tests.fakes import FakeBraze, FakeSlack
from tests.warehouses.conftest import demo_halves
from tests.warehouses.test_postgres import (
    DUCKDB_YAML,
    END,
    TABLES,
    _example,
    _tables,
    computed_in_halves,
)

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
    return demo_halves(tmp_path_factory.mktemp("demo"), EVENTS, END)



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


def test_a_list_longer_than_snowflake_compiles_is_split(sf):
    """Snowflake refuses a list of more than 16,384 expressions (error 001795); `cdp sync`
    deletes the keys a destination accepted (all of a Slack run's at once) with one `IN`."""
    sf.execute(exp.Create(this=exp.to_identifier("t", quoted=True), kind="SCHEMA", exists=True))
    table = exp.table_("keys", db="t", quoted=True)
    sf.execute(create_table(table, [("id", "text")]))
    assert sf.insert_arrow(table, pa.table({"id": [f"k{i}" for i in range(20_000)]})) == 20_000
    delete = exp.delete(table.copy(), where=exp.column("id", quoted=True).isin(
        *(exp.Literal.string(f"k{i}") for i in range(18_000))))
    lists = re.findall(r"IN \(([^)]*)\)", sf.render(delete))
    assert [len(items.split(", ")) for items in lists] == [16_384, 18_000 - 16_384]
    sf.execute(delete)
    assert sf.fetch(exp.select(exp.Count(this=exp.Star())).from_(table.copy())) == [(2_000,)]


def test_a_rolled_back_transaction_writes_temporary_stand_ins_and_keeps_nothing(sf):
    """Snowflake commits DDL on its own: inside ``transaction(rollback=True)`` (`cdp run
    --explain`, `cdp preview`) writes go to temporary stand-ins that later statements read."""
    sf.execute(exp.Create(this=exp.to_identifier("t", quoted=True), kind="SCHEMA", exists=True))
    sf.execute(exp.Use(kind=exp.var("SCHEMA"), this=exp.table_("t", quoted=True)))  # where temporary tables go
    kept, history = exp.table_("kept", db="t", quoted=True), exp.table_("history", db="t", quoted=True)
    sf.execute(create_as(kept.copy(), exp.select(exp.alias_(exp.Literal.number(1), "n", quoted=True))))
    sf.execute(create_as(history.copy(), exp.select(exp.alias_(exp.Literal.number(1), "n", quoted=True))))

    def numbers(table: exp.Table) -> list[int]:
        return sorted(row[0] for row in sf.fetch(exp.select("n").from_(table.copy())))

    with sf.transaction(rollback=True):
        # a replacement reading the table it replaces
        sf.execute(create_as(kept.copy(), exp.select(exp.alias_(exp.column("n") + 1, "n", quoted=True))
                             .from_(kept.copy())))
        assert numbers(kept) == [2]
        sf.execute(exp.insert(exp.select(exp.Literal.number(5)), kept.copy()))
        sf.execute(exp.delete(kept.copy(), where=exp.column("n", table="kept", quoted=True).eq(2)))
        assert numbers(kept) == [5]
        # DML on a table not written yet: on a copy of it
        sf.execute(exp.update(history.copy(), {"n": exp.Literal.number(9)},
                              where=exp.column("n", table="history", quoted=True).eq(1)))
        assert numbers(history) == [9] and numbers(exp.table_("history", db="t", alias="h", quoted=True)) == [9]
        sf.execute(exp.Drop(tables=[kept.copy()], kind="TABLE", exists=True))
        assert not sf.table_exists("t", "kept")
        sf.execute(create_table(kept.copy(), [("n", "integer"), ("j", "json")]))  # IF NOT EXISTS: it is not
        assert sf.columns("t", "kept") == ["n", "j"] and numbers(kept) == []
    assert numbers(kept) == [1] and numbers(history) == [1]  # nothing kept
    with pytest.raises(WarehouseError, match="does not exist"):
        sf.fetch(exp.select("*").from_(exp.to_table('"_cdp_dry_t_kept"')))  # the stand-ins are gone


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
    computed = computed_in_halves(projects, events, names)
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


# ---------------------------------------------------------------- cdp sync

# One `cdp sync` per job: in one call, jobs run side by side on sessions of their own, and
# fakesnow's shared catalog bookkeeping (a table keyed by schema and table name, temporary
# tables included) now and then fails two sessions creating their own `_sync_changes` at once
# (ConstraintException: Duplicate key ... "_sync_changes"). Snowflake keeps temporary tables
# per session.
JOBS = (("churn_risk", "braze"), ("churn_risk", "slack"), ("high_value_user", "braze"))


def _at(days: float) -> str:
    return (END - timedelta(days=days)).isoformat()


def _churner(user: str, plan: str) -> list[dict]:
    """Active 31-60 days before END, silent since, paying: churn_risk."""
    return [identify(user, _at(50), plan=plan, last_name=user.title()),
            track(user, "Report Generated", _at(45), report_type="usage")]


def _high_value(user: str) -> list[dict]:
    """10 reports in the last 30 days on Enterprise: high_value_user."""
    return [identify(user, _at(40), plan="enterprise"),
            *(track(user, "Report Generated", _at(day + 0.5), report_type="usage") for day in range(10))]


def _write(path, messages: list[dict]):
    path.write_text("".join(json.dumps(m) + "\n" for m in messages))
    return path


def _sync_rounds(runner, root, phases: list[list]) -> tuple[list[dict], dict]:  # noqa: F811
    """Per phase: `cdp load` its files, `cdp run`, `cdp sync` every job; then one more round
    of syncs with nothing new. What each job sent, per round (request bodies; Slack's texts),
    and who Braze holds in each audience at the end."""
    rounds = []
    with FakeBraze() as braze, FakeSlack() as slack:
        env = {"CDP_PROJECT": str(root), "CDP_AS_OF": END.isoformat(), "BRAZE_REST_ENDPOINT": braze.url,
               "BRAZE_API_KEY": braze.api_key, "SLACK_WEBHOOK_URL": slack.webhook_url}
        for files in [*phases, []]:
            if files:
                loaded = cdp(runner, "load", *files, env=env)
                assert loaded.exit_code == 0, loaded.output
                ran = cdp(runner, "run", env=env)
                assert ran.exit_code == 0, ran.output
            sent = {}
            for audience, destination in JOBS:
                fake = braze if destination == "braze" else slack
                before = len(fake.requests)
                synced = cdp(runner, "sync", audience, "--to", destination, env=env)
                assert synced.exit_code == 0 and "error" not in synced.output, synced.output
                sent[audience, destination] = [r.body["text"] if destination == "slack" else r.body
                                               for r in fake.requests[before:]]
            rounds.append(sent)
        held = {audience: {u.external_id for u in braze.users.values() if u.attributes.get(audience) is True}
                for audience, destination in JOBS if destination == "braze"}
    return rounds, held


def _bookkeeping(project, warehouse) -> dict[str, list[tuple]]:
    """sync_state and sync_runs, without instants and hashes (each warehouse has its own)."""
    def rows(table: str, columns: list[str]) -> list[tuple]:
        found = warehouse.fetch(exp.select(*(exp.column(c, quoted=True) for c in columns))
                                .from_(exp.table_(table, db=project.models_schema, quoted=True)))
        return sorted(tuple(row) for row in found)

    return {"state": rows("sync_state", ["audience", "destination", "key_type", "row_key", "member"]),
            "runs": rows("sync_runs", ["audience", "destination", "added", "changed", "removed", "failed", "status"]),
            "rejections": rows("sync_rejections", ["row_key"])}


def test_sync_on_snowflake_sends_what_duckdb_sends_then_only_changes(runner, tmp_path, events):  # noqa: F811
    """The example project's audiences synced to fake Braze and Slack over HTTP from fakesnow
    and from DuckDB: the same requests in every round. Round 1: the demo events plus people
    made to enter both audiences; round 2: new events make one churner leave, one upgrade its
    plan (a mapped field), one enter, and one high-value user enter; round 3: nothing new,
    no request."""
    first = _write(tmp_path / "people_1.jsonl", [*_churner("sf_stays", "growth"), *_churner("sf_leaves", "growth"),
                                                 *_churner("sf_upgrades", "growth"), *_high_value("sf_hv")])
    second = _write(tmp_path / "people_2.jsonl", [
        track("sf_leaves", "Report Generated", _at(1), report_type="usage"),  # active again: no churn risk
        identify("sf_upgrades", _at(35), plan="enterprise"),
        *_churner("sf_enters", "starter"), *_high_value("sf_hv_new")])
    phases = [[events[0], first], [second]]
    sent, held, bookkeeping = {}, {}, {}
    for kind, yaml in (("duckdb", DUCKDB_YAML), ("snowflake", SNOWFLAKE_YAML)):
        root = _example(tmp_path / kind, yaml, "raw", "cdp")
        sent[kind], held[kind] = _sync_rounds(runner, root, phases)
        project = load_project(root, environ={})
        with connect(project) as warehouse:
            assert warehouse.dialect == kind
            bookkeeping[kind] = _bookkeeping(project, warehouse)
            members = {audience: {row[0] for row in warehouse.fetch(
                f'SELECT p."user_id" FROM "cdp"."audience_members" AS m JOIN "cdp"."profiles" AS p '
                f'ON p."profile_id" = m."profile_id" WHERE m."audience" = \'{audience}\' '
                'AND m."split" IS DISTINCT FROM \'holdout\' AND p."user_id" IS NOT NULL')}
                for audience in ("churn_risk", "high_value_user")}
        assert held[kind] == members, kind  # Braze holds the audiences, holdout left out
    assert sent["snowflake"] == sent["duckdb"]
    assert bookkeeping["snowflake"] == bookkeeping["duckdb"]

    first_round, second_round, third_round = sent["snowflake"]
    churners = {"sf_stays", "sf_leaves", "sf_upgrades"}
    assert churners <= {a["external_id"] for body in first_round["churn_risk", "braze"] for a in body["attributes"]
                        if a.get("churn_risk") is True}
    assert "sf_hv" in {a["external_id"] for body in first_round["high_value_user", "braze"]
                       for a in body["attributes"]}
    assert all(name in first_round["churn_risk", "slack"][0] for name in churners)
    # only the changes: one request each, naming only the people the new events changed
    changes = {a["external_id"]: a for body in second_round["churn_risk", "braze"] for a in body["attributes"]}
    assert set(changes) == {"sf_leaves", "sf_upgrades", "sf_enters"}
    assert changes["sf_leaves"] == {"external_id": "sf_leaves", "churn_risk": False}  # mirror: removed
    assert changes["sf_upgrades"] == {"external_id": "sf_upgrades", "plan": "enterprise"}  # changed: that field only
    assert changes["sf_enters"] == {"external_id": "sf_enters", "churn_risk": True, "plan": "starter",
                                    "last_seen_at": "2026-05-16T00:00:00.000Z"}  # its report, 45 days before END
    assert second_round["churn_risk", "slack"] == ["*churn_risk*\n1 entered: sf_enters"]
    assert second_round["high_value_user", "braze"] == [
        {"attributes": [{"external_id": "sf_hv_new", "high_value_user": True}]}]
    assert third_round == {job: [] for job in JOBS}
    assert len(bookkeeping["snowflake"]["runs"]) == 3 * len(JOBS)
    assert {row[-1] for row in bookkeeping["snowflake"]["runs"]} == {"success"}


# ---------------------------------------------------------------- cdp run --explain


def test_run_explain_and_preview_print_each_model_and_keep_nothing(runner, tmp_path, events):  # noqa: F811
    """`cdp run --explain` on fakesnow: each model's SQL as Snowflake runs it, then its plan.
    fakesnow has no EXPLAIN in any form, so each plan is a line saying Snowflake did not
    explain it. Snowflake cannot roll DDL back, so the explained run (and `cdp preview`'s)
    writes temporary stand-ins of the tables instead: no table changes, although the run
    explained has new events to compute; the preview reads what its run computed."""
    root = _example(tmp_path / "snowflake", SNOWFLAKE_YAML, "raw", "cdp", stitch=True)
    env = {"CDP_PROJECT": str(root), "CDP_AS_OF": END.isoformat()}
    project = load_project(root, environ={})
    assert cdp(runner, "load", events[0], env=env).exit_code == 0
    assert cdp(runner, "run", "--as-of", (END - timedelta(days=7)).isoformat(), env=env).exit_code == 0
    assert cdp(runner, "load", events[1], env=env).exit_code == 0
    names = (*TABLES, "identity_map")
    everything = "SELECT table_schema, table_name, row_count FROM information_schema.tables ORDER BY 1, 2"
    with connect(project) as warehouse:
        before, tables = _tables(project, warehouse, names), warehouse.fetch(everything)

    explained = cdp(runner, "run", "--explain", env=env)
    assert explained.exit_code == 0, explained.output
    output = explained.output
    sections = re.findall(r"^-- (\S+)\n(.*?;)\n-- plan \(snowflake EXPLAIN\)\n(.*?)\n\n", output, re.DOTALL | re.MULTILINE)
    assert [model for model, _, _ in sections] == ["profiles", "_profile_aggregates", "profile_traits",
                                                   "audience_members"], output
    assert all(plan.startswith("no plan: Snowflake did not explain this statement (") for _, _, plan in sections)
    # Snowflake's SQL, every identifier quoted, the tables named as `cdp run` names them
    sql = "\n".join(text for _, text, _ in sections)
    assert 'FROM "raw"."events" AS "e"' in sql and 'LEFT JOIN "cdp"."identity_map" AS "u"' in sql
    assert "GET_PATH(" in sql and "_cdp_dry_" not in sql

    previewed = cdp(runner, "preview", "churn_risk", env=env)
    assert previewed.exit_code == 0, previewed.output
    with connect(project) as warehouse:
        assert _tables(project, warehouse, names) == before  # nothing kept
        assert warehouse.fetch(everything) == tables  # no table left behind
        ran = cdp(runner, "run", env=env)
        assert ran.exit_code == 0, ran.output
        after = _tables(project, warehouse, names)
    assert after["audience_members"] != before["audience_members"]  # what the explained run computed
    def size(tables: dict) -> str:
        members = sum(dict(row)["audience"] == "churn_risk" for row in tables["audience_members"])
        return f": {members:,} members of {len(tables['profiles']):,} profiles"

    assert size(after) in previewed.output and size(before) != size(after)  # the preview read its own run
