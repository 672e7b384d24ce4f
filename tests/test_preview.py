"""`cdp preview AUDIENCE` (spec section 8): size, sample and breakdowns, computed but never stored."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from cdp_warehouse.cli import main
from cdp_warehouse.errors import CdpError
from cdp_warehouse.hashing import split_for
from cdp_warehouse.preview import preview
from tests.conftest import AS_OF, MINIMAL_CDP_YAML, identify, track, write_project

PROJECT = """
    traits:
      - name: plan
        trait: {trait: plan}
      - name: reports_30d
        count: {event: Report Generated, window: 30d}
    audiences:
      - name: power
        title: Power user
        description: Reports a lot on a paid plan
        where: reports_30d >= 2 AND plan <> 'free'
        splits: {treatment: 50, holdout: 50}
      - name: everyone
        where: events('*') > 0
"""

SPLITS = {"treatment": 50, "holdout": 50}


def _story() -> list[dict]:
    """Six profiles, three of them power users at AS_OF."""
    messages = []
    for user, plan, reports in (("ann", "pro", 3), ("bob", "enterprise", 2), ("cid", "pro", 5),
                                ("dee", "free", 4), ("eve", "pro", 1), ("fay", "pro", 0)):
        messages.append(identify(user, "2026-05-01T00:00:00Z", plan=plan, email=f"{user}@example.com"))
        messages.append(track(user, "Signed Up", "2026-05-01T00:00:00Z"))
        messages.extend(track(user, "Report Generated", f"2026-06-{10 + day:02d}T00:00:00Z") for day in range(reports))
    return messages


def stored(ws) -> dict[str, object]:
    """What a run would have written: each table's rows, or None when it does not exist."""
    tables = {}
    for table in ("profiles", "profile_traits", "audience_members", "audience_membership"):
        if ws.warehouse.table_exists("cdp", table):
            tables[table] = sorted(tuple(map(repr, row)) for row in ws.query(f"SELECT * FROM cdp.{table}"))
        else:
            tables[table] = None
    return tables


def test_preview_reports_size_share_sample_breakdowns_and_splits(workspace):
    ws = workspace(PROJECT)
    ws.land(*_story())
    result = preview(ws.project, ws.warehouse, "power", AS_OF)

    assert result.audience == "power"
    assert result.size == 3
    assert result.profiles == 6
    assert result.share == pytest.approx(0.5)

    assert result.sample_columns[0] == "profile_id"
    assert {"user_id", "email", "plan", "reports_30d"} <= set(result.sample_columns)
    sample = [dict(zip(result.sample_columns, row, strict=True)) for row in result.sample]
    assert {row["profile_id"] for row in sample} == {"ann", "bob", "cid"}
    by_id = {row["profile_id"]: row for row in sample}
    assert by_id["cid"]["reports_30d"] == 5
    assert by_id["bob"]["plan"] == "enterprise"
    assert by_id["ann"]["email"] == "ann@example.com"

    breakdowns = {breakdown.trait: breakdown for breakdown in result.breakdowns}
    assert set(breakdowns) == {"plan", "reports_30d"}
    reports = breakdowns["reports_30d"]
    assert reports.numeric
    stats = {label: (members, everyone) for label, members, everyone in reports.rows}
    assert stats["min"] == (2, 0)
    assert stats["max"] == (5, 5)
    assert stats["avg"][0] == pytest.approx(10 / 3)
    assert stats["avg"][1] == pytest.approx(15 / 6)
    plan = breakdowns["plan"]
    assert not plan.numeric
    assert {value: count for value, count, _share in plan.rows} == {"pro": 2, "enterprise": 1}

    expected_splits: dict[str, int] = {}
    for member in ("ann", "bob", "cid"):
        name = split_for("power", member, SPLITS)
        expected_splits[name] = expected_splits.get(name, 0) + 1
    assert result.splits == expected_splits


def test_preview_of_an_audience_without_splits_has_no_splits(workspace):
    ws = workspace(PROJECT)
    ws.land(*_story())
    result = preview(ws.project, ws.warehouse, "everyone", AS_OF)
    assert result.size == 6
    assert result.share == pytest.approx(1.0)
    assert result.splits == {}


def test_preview_respects_the_as_of(workspace):
    ws = workspace(PROJECT)
    ws.land(*_story())
    # on 2026-06-12 ann and cid have two reports each, bob has two (on the 10th and 11th)
    early = preview(ws.project, ws.warehouse, "power", datetime(2026, 6, 12, tzinfo=UTC))
    assert early.size == 3
    # on 2026-06-11 only one report each so far
    earlier = preview(ws.project, ws.warehouse, "power", datetime(2026, 6, 11, tzinfo=UTC))
    assert earlier.size == 0
    assert earlier.share == 0.0
    assert earlier.sample == []


def test_preview_before_any_run_stores_nothing(workspace):
    ws = workspace(PROJECT)
    ws.land(*_story())
    before = stored(ws)
    result = preview(ws.project, ws.warehouse, "power", AS_OF)
    assert result.size == 3
    after = stored(ws)
    assert after["profiles"] is None
    assert after["profile_traits"] is None
    assert not after["audience_members"]  # absent or empty
    assert not after["audience_membership"]  # absent or empty
    assert not before["audience_members"] and not before["audience_membership"]


def test_preview_after_a_run_stores_nothing(workspace):
    ws = workspace(PROJECT)
    ws.land(*_story())
    ws.run(datetime(2026, 6, 11, tzinfo=UTC))  # nobody is a power user yet
    assert ws.members("power") == set()
    before = stored(ws)

    result = preview(ws.project, ws.warehouse, "power", AS_OF)
    assert result.size == 3
    assert stored(ws) == before
    assert ws.members("power") == set()

    # a run afterwards sees the preview never happened: all three enter now
    later = ws.run(AS_OF)
    assert later.entered["power"] == 3


def test_preview_of_an_unknown_audience_names_it(workspace):
    ws = workspace(PROJECT)
    with pytest.raises(CdpError, match="powr") as raised:
        preview(ws.project, ws.warehouse, "powr", AS_OF)
    assert "power" in (raised.value.hint or "")


# --- the command line --------------------------------------------------------------------------


@pytest.fixture
def cli_project(tmp_path):
    """A project folder with the story landed, and its warehouse closed again."""
    from cdp_warehouse.collect.loader import land_messages
    from cdp_warehouse.specs import load_project
    from cdp_warehouse.warehouses import connect

    root = write_project(tmp_path / "cli", PROJECT, MINIMAL_CDP_YAML)
    project = load_project(root, environ={})
    with connect(project) as warehouse:
        land_messages(project, warehouse, _story())
    return root


def _invoke(root, *args, env=None):
    runner = CliRunner()
    return runner.invoke(main, ["--project", str(root), *args], env={"CDP_AS_OF": None, **(env or {})})


def _members_on_disk(root) -> list[tuple]:
    from cdp_warehouse.specs import load_project
    from cdp_warehouse.warehouses import connect

    project = load_project(root, environ={})
    with connect(project) as warehouse:
        if not warehouse.table_exists("cdp", "audience_members"):
            return []
        return sorted(warehouse.fetch("SELECT audience, profile_id, split, as_of FROM cdp.audience_members"))


def test_cli_run_then_preview_prints_the_member_count(cli_project):
    ran = _invoke(cli_project, "run", "--as-of", "2026-06-11")
    assert ran.exit_code == 0, ran.output + (ran.stderr or "")
    before = _members_on_disk(cli_project)

    shown = _invoke(cli_project, "preview", "power", "--as-of", "2026-06-30T00:00:00Z")
    assert shown.exit_code == 0, shown.output + (shown.stderr or "")
    text = " ".join(shown.stdout.split())
    assert "3 members" in text
    assert "of 6 profiles" in text
    assert "Power user" in text  # the title
    assert _members_on_disk(cli_project) == before  # nothing stored


def test_cli_preview_takes_the_as_of_from_the_environment(cli_project):
    shown = _invoke(cli_project, "preview", "power", env={"CDP_AS_OF": "2026-06-11"})
    assert shown.exit_code == 0, shown.output + (shown.stderr or "")
    assert "0 members" in " ".join(shown.stdout.split())


def test_cli_preview_of_an_unknown_audience_fails_with_one_line_and_a_hint(cli_project):
    shown = _invoke(cli_project, "preview", "powr", "--as-of", "2026-06-30")
    assert shown.exit_code == 1
    lines = [line for line in shown.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    hints = [line for line in lines if line.startswith("hint:")]
    assert len(errors) == 1 and "powr" in errors[0]
    assert len(hints) == 1 and "power" in hints[0]
    assert "Traceback" not in shown.output + shown.stderr
    assert len(lines) == 2
