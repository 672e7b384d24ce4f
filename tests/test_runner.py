"""`cdp run` (spec sections 2, 5, 8): membership history, backfills, atomicity and --select."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta, timezone

import pytest

from cdp_warehouse.errors import CdpError, WarehouseError
from cdp_warehouse.runner import run
from cdp_warehouse.specs import load_project
from tests.conftest import AS_OF, identify, track

T1 = datetime(2026, 6, 10, tzinfo=UTC)
T2 = datetime(2026, 6, 20, tzinfo=UTC)
T3 = datetime(2026, 6, 30, tzinfo=UTC)

WEEKLY = """
    audiences:
      - name: active_week
        where: events('*', '7d') > 0
"""


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def history(ws, audience: str | None = None) -> list[tuple]:
    """Rows of audience_membership as (audience, profile_id, entered_at, exited_at), sorted."""
    rows = ws.query("SELECT audience, profile_id, entered_at, exited_at FROM cdp.audience_membership")
    rows = [(a, p, _utc(entered), _utc(exited)) for a, p, entered, exited in rows]
    if audience is not None:
        rows = [row for row in rows if row[0] == audience]
    return sorted(rows, key=lambda row: (row[0], row[1], row[2]))


def snapshot(ws) -> dict[str, list[tuple]]:
    """Every row of the tables a run writes, order-independent."""
    tables = {}
    for table in ("profiles", "profile_traits", "audience_members", "audience_membership"):
        rows = ws.query(f"SELECT * FROM cdp.{table}")
        tables[table] = sorted(tuple(map(repr, row)) for row in rows)
    tables["profile_traits columns"] = ws.warehouse.columns("cdp", "profile_traits")
    return tables


# --- membership history ------------------------------------------------------------------------


def test_history_opens_closes_and_reopens_intervals(workspace):
    ws = workspace(WEEKLY)
    ws.land(
        # comes and goes: active before T1, silent the week before T2, active again before T3
        track("flaky", "Visit", "2026-06-08T00:00:00Z"),
        track("flaky", "Visit", "2026-06-25T00:00:00Z"),
        # active before every run: one interval, never closed
        track("steady", "Visit", "2026-06-09T00:00:00Z"),
        track("steady", "Visit", "2026-06-19T00:00:00Z"),
        track("steady", "Visit", "2026-06-29T00:00:00Z"),
    )

    first = ws.run(T1)
    assert history(ws) == [
        ("active_week", "flaky", T1, None),
        ("active_week", "steady", T1, None),
    ]
    assert first.entered == {"active_week": 2}
    assert first.exited == {"active_week": 0}

    second = ws.run(T2)
    assert ws.members("active_week") == {"steady"}
    assert history(ws) == [
        ("active_week", "flaky", T1, T2),
        ("active_week", "steady", T1, None),
    ]
    assert second.entered == {"active_week": 0}
    assert second.exited == {"active_week": 1}

    third = ws.run(T3)
    assert ws.members("active_week") == {"flaky", "steady"}
    assert history(ws) == [
        ("active_week", "flaky", T1, T2),
        ("active_week", "flaky", T3, None),
        ("active_week", "steady", T1, None),
    ]
    assert third.entered == {"active_week": 1}
    assert third.exited == {"active_week": 0}


def test_history_is_per_audience(workspace):
    ws = workspace("""
        audiences:
          - name: visitors
            where: events('Visit', '7d') > 0
          - name: buyers
            where: events('Order Completed', '7d') > 0
    """)
    ws.land(
        track("ann", "Visit", "2026-06-08T00:00:00Z"),
        track("ann", "Order Completed", "2026-06-18T00:00:00Z"),
    )
    first = ws.run(T1)
    second = ws.run(T2)
    assert history(ws) == [
        ("buyers", "ann", T2, None),
        ("visitors", "ann", T1, T2),
    ]
    assert (first.entered, first.exited) == ({"visitors": 1, "buyers": 0}, {"visitors": 0, "buyers": 0})
    assert (second.entered, second.exited) == ({"visitors": 0, "buyers": 1}, {"visitors": 1, "buyers": 0})


def test_a_second_run_with_no_new_data_changes_nothing_in_history(workspace):
    ws = workspace(WEEKLY)
    ws.land(
        track("ann", "Visit", "2026-06-08T00:00:00Z"),
        track("bob", "Visit", "2026-06-09T00:00:00Z"),
    )
    first = ws.run(T1)
    before = history(ws)
    again = ws.run(T1)
    assert history(ws) == before
    # a re-run at the same as-of replaces that instant: it reports the same changes
    assert again.entered == first.entered == {"active_week": 2}
    assert again.exited == {"active_week": 0}
    assert again.history_skipped == ()


def test_a_later_run_where_nobody_changed_adds_no_interval(workspace):
    ws = workspace("""
        audiences:
          - name: ever_active
            where: events('*') > 0
    """)
    ws.land(track("ann", "Visit", "2026-06-01T00:00:00Z"))
    ws.run(T1)
    before = history(ws)
    later = ws.run(T3)
    assert history(ws) == before == [("ever_active", "ann", T1, None)]
    assert later.entered == {"ever_active": 0}
    assert later.exited == {"ever_active": 0}


def test_a_backfill_keeps_history_but_replaces_members(workspace):
    ws = workspace(WEEKLY)
    ws.land(
        track("early", "Visit", "2026-06-08T00:00:00Z"),
        track("late", "Visit", "2026-06-18T00:00:00Z"),
    )
    ws.run(T2)
    assert ws.members("active_week") == {"late"}
    before = history(ws)
    assert before == [("active_week", "late", T2, None)]

    backfill = ws.run(T1)  # older than the history's latest instant
    assert backfill.history_skipped == ("active_week",)
    assert history(ws) == before
    # the members table is still the latest run's: T1's members, stamped T1
    assert ws.members("active_week") == {"early"}
    assert {_utc(row[0]) for row in ws.query("SELECT as_of FROM cdp.audience_members")} == {T1}
    assert backfill.audience_sizes == {"active_week": 1}


def test_a_backfill_before_a_closed_interval_also_keeps_history(workspace):
    ws = workspace(WEEKLY)
    ws.land(track("ann", "Visit", "2026-06-08T00:00:00Z"))
    ws.run(T1)
    ws.run(T2)  # ann leaves: the latest instant is now T2 (an exit)
    before = history(ws)
    assert before == [("active_week", "ann", T1, T2)]
    backfill = ws.run(T1 + timedelta(days=1))
    assert backfill.history_skipped == ("active_week",)
    assert history(ws) == before
    assert ws.members("active_week") == {"ann"}


# --- atomicity ---------------------------------------------------------------------------------

GOOD = """
    traits:
      - name: plan
        trait: {trait: plan}
      - name: visits
        count: {event: Visit}
    audiences:
      - name: pros
        where: plan = 'pro'
      - name: visitors
        where: events('Visit', '7d') > 0
"""

BROKEN_TRAIT = GOOD.replace("""      - name: visits
        count: {event: Visit}
""", """      - name: visits
        count: {event: Visit}
      - name: plan_number
        expression: {sql: "CAST(plan AS INTEGER)"}
""")

BROKEN_AUDIENCE = GOOD + """      - name: numbered_plans
        where: CAST(plan AS INTEGER) > 0
"""


def _rewrite(ws, audiences_yaml: str):
    """The same project folder with new YAML, loaded again."""
    (ws.project.root / "audiences" / "main.yaml").write_text(textwrap.dedent(audiences_yaml))
    return load_project(ws.project.root, environ={})


@pytest.mark.parametrize("broken", [BROKEN_TRAIT, BROKEN_AUDIENCE], ids=["trait", "audience"])
def test_a_run_that_fails_in_the_warehouse_leaves_every_table_as_it_was(workspace, broken):
    ws = workspace(GOOD)
    ws.land(
        identify("ann", "2026-06-01T00:00:00Z", plan="pro"),
        track("ann", "Visit", "2026-06-08T00:00:00Z"),
        identify("bob", "2026-06-01T00:00:00Z", plan="free"),
    )
    ws.run(T1)
    before = snapshot(ws)
    assert before["audience_membership"]  # there is history to protect

    # New data that would change every table, then a project that fails at execution time
    # ('pro' is not an integer) although it parses and validates.
    ws.land(
        identify("cid", "2026-06-15T00:00:00Z", plan="enterprise"),
        track("cid", "Visit", "2026-06-16T00:00:00Z"),
        identify("bob", "2026-06-15T00:00:00Z", plan="pro"),
    )
    broken_project = _rewrite(ws, broken)
    with pytest.raises(WarehouseError):
        run(broken_project, ws.warehouse, T2)
    assert snapshot(ws) == before

    # and the warehouse is still usable: the good project runs on
    result = run(_rewrite(ws, GOOD), ws.warehouse, T2)
    assert ws.members("pros") == {"ann", "bob"}
    assert ws.members("visitors") == {"cid"}
    assert result.exited == {"pros": 0, "visitors": 1}


def test_a_failed_selected_run_leaves_every_table_as_it_was(workspace):
    ws = workspace(GOOD)
    ws.land(identify("ann", "2026-06-01T00:00:00Z", plan="pro"), track("ann", "Visit", "2026-06-08T00:00:00Z"))
    ws.run(T1)
    before = snapshot(ws)
    ws.land(identify("bob", "2026-06-15T00:00:00Z", plan="pro"))
    with pytest.raises(WarehouseError):
        run(_rewrite(ws, BROKEN_AUDIENCE), ws.warehouse, T2, ["pros", "numbered_plans"])
    assert snapshot(ws) == before

    # a selected run of the good project afterwards works and sees bob
    run(_rewrite(ws, GOOD), ws.warehouse, T2, ["pros"])
    assert ws.members("pros") == {"ann", "bob"}
    assert ws.members("visitors") == {"ann"}


# --- --select ----------------------------------------------------------------------------------

SELECTABLE = """
    traits:
      - name: visits
        count: {event: Visit}
      - name: orders
        count: {event: Order Completed}
    audiences:
      - name: visitors
        where: visits > 0
      - name: buyers
        where: orders > 0
"""


def test_selecting_an_audience_recomputes_it_and_keeps_the_other_audiences(workspace):
    ws = workspace(SELECTABLE)
    ws.land(track("ann", "Visit", "2026-06-01T00:00:00Z"), track("ann", "Order Completed", "2026-06-01T00:00:00Z"))
    ws.run(T1)
    buyers_rows = ws.query("SELECT * FROM cdp.audience_members WHERE audience = 'buyers'")
    buyers_history = history(ws, "buyers")

    # bob visits and buys; only visitors is recomputed
    ws.land(track("bob", "Visit", "2026-06-12T00:00:00Z"), track("bob", "Order Completed", "2026-06-12T00:00:00Z"))
    result = ws.run(T2, select=["visitors"])
    assert result.audiences == ("visitors",)
    assert ws.members("visitors") == {"ann", "bob"}
    assert ws.members("buyers") == {"ann"}  # kept as the last run left it
    assert ws.query("SELECT * FROM cdp.audience_members WHERE audience = 'buyers'") == buyers_rows
    assert history(ws, "buyers") == buyers_history
    assert history(ws, "visitors") == [("visitors", "ann", T1, None), ("visitors", "bob", T2, None)]
    assert result.entered == {"visitors": 1}

    # a full run then catches buyers up
    ws.run(T3)
    assert ws.members("buyers") == {"ann", "bob"}


def test_selecting_a_trait_recomputes_it_and_keeps_the_other_columns(workspace):
    ws = workspace(SELECTABLE)
    ws.land(track("ann", "Visit", "2026-06-01T00:00:00Z"), track("ann", "Order Completed", "2026-06-01T00:00:00Z"))
    ws.run(T1)
    columns = ws.warehouse.columns("cdp", "profile_traits")
    members = ws.query("SELECT * FROM cdp.audience_members ORDER BY audience, profile_id")

    ws.land(track("ann", "Visit", "2026-06-12T00:00:00Z"), track("ann", "Order Completed", "2026-06-12T00:00:00Z"))
    result = ws.run(T2, select=["visits"])
    assert "visits" in result.traits
    assert ws.warehouse.columns("cdp", "profile_traits") == columns
    assert ws.traits()["ann"]["visits"] == 2  # recomputed
    assert ws.traits()["ann"]["orders"] == 1  # kept from the last run
    assert ws.query("SELECT * FROM cdp.audience_members ORDER BY audience, profile_id") == members


def test_selecting_several_names_at_once(workspace):
    ws = workspace(SELECTABLE)
    ws.land(track("ann", "Visit", "2026-06-01T00:00:00Z"))
    ws.run(T1)
    ws.land(track("bob", "Order Completed", "2026-06-12T00:00:00Z"), track("ann", "Visit", "2026-06-12T00:00:00Z"))
    ws.run(T2, select=["buyers", "visits"])
    assert ws.members("buyers") == {"bob"}
    assert ws.members("visitors") == {"ann"}  # not selected: kept
    assert ws.traits()["ann"]["visits"] == 2


def test_selecting_an_unknown_name_is_an_error_naming_it(workspace):
    ws = workspace(SELECTABLE)
    ws.land(track("ann", "Visit", "2026-06-01T00:00:00Z"))
    ws.run(T1)
    before = snapshot(ws)
    with pytest.raises(CdpError, match="vistors"):
        ws.run(T2, select=["vistors"])
    assert snapshot(ws) == before


def test_the_run_result_reports_sizes_and_profiles(workspace):
    ws = workspace(SELECTABLE)
    ws.land(
        track("ann", "Visit", "2026-06-01T00:00:00Z"),
        track("bob", "Order Completed", "2026-06-01T00:00:00Z"),
        track("cid", "Signed Up", "2026-06-01T00:00:00Z"),
    )
    result = ws.run(AS_OF)
    assert result.as_of == AS_OF
    assert result.profiles == 3
    assert result.audience_sizes == {"visitors": 1, "buyers": 1}
    assert set(result.traits) == {"visits", "orders"}
    assert set(result.audiences) == {"visitors", "buyers"}


def test_selecting_only_a_trait_on_a_fresh_warehouse_computes_it(workspace):
    """`cdp run --select visits` before any full run: traits are computed, no audience yet."""
    ws = workspace(SELECTABLE)
    ws.land(track("ann", "Visit", "2026-06-01T00:00:00Z"))
    result = ws.run(T1, select=["visits"])
    assert ws.traits()["ann"]["visits"] == 1
    assert result.audience_sizes == {}
    assert ws.members("visitors") == set()


def test_selecting_an_audience_on_a_fresh_warehouse_computes_only_it(workspace):
    ws = workspace(SELECTABLE)
    ws.land(track("ann", "Visit", "2026-06-01T00:00:00Z"), track("ann", "Order Completed", "2026-06-01T00:00:00Z"))
    result = ws.run(T1, select=["visitors"])
    assert result.audience_sizes == {"visitors": 1}
    assert ws.members("visitors") == {"ann"}
    assert history(ws) == [("visitors", "ann", T1, None)]


# --- the as-of instant -------------------------------------------------------------------------


def test_an_as_of_with_an_offset_and_microseconds_is_the_same_instant_in_history(workspace):
    ws = workspace(WEEKLY)
    ws.land(track("ann", "Visit", "2026-06-08T00:00:00Z"))
    instant = datetime(2026, 6, 10, 2, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    ws.run(instant)
    assert history(ws) == [("active_week", "ann", datetime(2026, 6, 10, 0, 0, 0, 123456, tzinfo=UTC), None)]
    # the same instant written in UTC is not older than the history: nothing skipped, the
    # instant is replaced by the same change
    again = ws.run(instant.astimezone(UTC))
    assert again.history_skipped == ()
    assert again.entered == {"active_week": 1}
    assert len(history(ws)) == 1


# --- the command line --------------------------------------------------------------------------


def _cli(root, *args):
    from click.testing import CliRunner

    from cdp_warehouse.cli import main

    return CliRunner().invoke(main, ["--project", str(root), *args], env={"CDP_AS_OF": None})


def test_cli_run_prints_members_entered_and_exited(workspace):
    ws = workspace(WEEKLY)
    ws.land(track("ann", "Visit", "2026-06-08T00:00:00Z"), track("bob", "Visit", "2026-06-09T00:00:00Z"))
    root = ws.project.root
    ws.warehouse.close()
    first = _cli(root, "run", "--as-of", "2026-06-10T00:00:00Z")
    assert first.exit_code == 0, first.output + first.stderr
    assert "2 profiles" in first.stdout
    assert _table_row(first.stdout, "active_week") == ["active_week", "2", "2", "0"]
    second = _cli(root, "run", "--as-of", "2026-06-20")
    assert second.exit_code == 0, second.output + second.stderr
    assert _table_row(second.stdout, "active_week") == ["active_week", "0", "0", "2"]
    ws.warehouse = _reopen(ws)


def _table_row(output: str, first_cell: str) -> list[str]:
    """The cells of the printed table row that starts with ``first_cell`` (audience, members,
    entered, exited)."""
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.replace("│", "|").replace("┃", "|").split("|")]
        cells = [cell for cell in cells if cell]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row for {first_cell!r} in:\n{output}")


def _reopen(ws):
    from cdp_warehouse.warehouses import connect

    return connect(ws.project)


def test_cli_run_with_an_unknown_select_exits_1_naming_it(workspace):
    ws = workspace(SELECTABLE)
    root = ws.project.root
    ws.warehouse.close()
    failed = _cli(root, "run", "--as-of", "2026-06-10", "--select", "vistors")
    assert failed.exit_code == 1
    lines = [line for line in failed.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("error:") and "vistors" in lines[0]
    assert any(line.startswith("hint:") and "visitors" in line for line in lines)
    ws.warehouse = _reopen(ws)


def test_cli_run_with_a_selected_trait_on_a_fresh_warehouse_succeeds(workspace):
    ws = workspace(SELECTABLE)
    ws.land(track("ann", "Visit", "2026-06-01T00:00:00Z"))
    root = ws.project.root
    ws.warehouse.close()
    ran = _cli(root, "run", "--as-of", "2026-06-10", "--select", "visits")
    ws.warehouse = _reopen(ws)
    assert ran.exit_code == 0, ran.output + ran.stderr
    assert ws.traits()["ann"]["visits"] == 1


def test_rerun_at_the_same_as_of_replaces_that_instant_in_history(workspace):
    """Regression: a re-run at a pinned as-of recorded an exit and a re-entry that never
    happened ([T1,T2) + [T2,null)) when late data arrived for T2."""
    ws = workspace("""
        audiences:
          - name: active
            where: events('*', '7d') > 0
    """)
    t1 = datetime(2026, 6, 10, tzinfo=UTC)
    t2 = datetime(2026, 6, 20, tzinfo=UTC)
    ws.land(track("x", "Login", "2026-06-09T00:00:00Z"))
    ws.run(as_of=t1)
    first = ws.run(as_of=t2)
    assert first.exited == {"active": 1}
    ws.land(track("x", "Login", "2026-06-19T00:00:00Z"))  # late data: x was active after all
    again = ws.run(as_of=t2)
    assert again.exited == {"active": 0} and again.entered == {"active": 0}
    rows = ws.query("SELECT entered_at, exited_at FROM cdp.audience_membership WHERE profile_id = 'x'")
    assert rows == [(datetime(2026, 6, 10), None)]


def test_carried_over_counts_default_to_zero_for_profiles_new_since_the_last_run(workspace):
    """Regression: on a --select run, a profile that appeared since the last full run got
    NULL instead of 0 for the count traits it did not recompute."""
    ws = workspace("""
        traits:
          - name: n_all
            count: {event: "*"}
          - name: n_buy
            count: {event: Buy}
          - name: days
            days_active: {event: "*", window: 30d}
    """)
    ws.land(track("a", "Buy", "2026-06-01T00:00:00Z"))
    ws.run()
    ws.land(track("b", "Look", "2026-06-02T00:00:00Z"))
    ws.run(select=["n_all"])
    assert {k: (v["n_all"], v["n_buy"], v["days"]) for k, v in ws.traits().items()} == {
        "a": (1, 1, 1), "b": (1, 0, 0)}


def test_cli_select_takes_several_names_after_one_flag(workspace):
    """Regression: `cdp run --select a b` failed with 'unexpected extra argument'."""
    ws = workspace("""
        traits:
          - name: visits
            count: {event: Visit}
        audiences:
          - name: one
            where: visits > 0
          - name: two
            where: visits > 1
    """)
    ws.land(track("ann", "Visit", "2026-06-08T00:00:00Z"))
    result = _cli(ws.project.root, "run", "--as-of", "2026-06-30", "--select", "one", "two")
    assert result.exit_code == 0, result.output
    assert ws.members("one") == {"ann"} and ws.members("two") == set()
    stray = _cli(ws.project.root, "run", "one")
    assert stray.exit_code == 1 and "--select one" in stray.output
