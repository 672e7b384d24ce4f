"""`cdp profile IDENTIFIER`: one stitched person, for support engineers."""

from __future__ import annotations

from click.testing import CliRunner

from cdp_warehouse.cli import main
from tests.conftest import MINIMAL_CDP_YAML, identify, page, track

STITCH = MINIMAL_CDP_YAML + "identity:\n  stitch: true\n"

PROJECT = """
    traits:
      - name: visits
        count: {event: "*"}
    audiences:
      - name: visitors
        where: visits > 0
"""


def test_profile_by_email_shows_identifiers_traits_memberships_and_events(workspace):
    ws = workspace(PROJECT, STITCH)
    ws.land(
        page(None, "Pricing", "2026-06-01T00:00:00Z", anonymous="anon-1"),
        identify("u1", "2026-06-02T00:00:00Z", anonymous="anon-1", email="Ann@Example.com"),
        track("u1", "Login", "2026-06-03T00:00:00Z"),
    )
    ws.run()
    result = CliRunner().invoke(main, ["--project", str(ws.project.root), "profile", "ann@example.com"])
    assert result.exit_code == 0, result.output
    for expected in ("profile u1", "anon-1", "ann@example.com", "visits", "visitors", "Pricing", "Login"):
        assert expected in result.output, expected


def test_an_unknown_identifier_is_one_line_and_a_hint(workspace):
    ws = workspace(PROJECT, STITCH)
    ws.land(track("u1", "Login", "2026-06-03T00:00:00Z"))
    ws.run()
    result = CliRunner().invoke(main, ["--project", str(ws.project.root), "profile", "nobody"])
    assert result.exit_code == 1
    assert "no profile has the identifier 'nobody'" in result.output and "hint:" in result.output


def test_profile_needs_stitching(workspace):
    ws = workspace(PROJECT)
    ws.land(track("u1", "Login", "2026-06-03T00:00:00Z"))
    ws.run()
    result = CliRunner().invoke(main, ["--project", str(ws.project.root), "profile", "u1"])
    assert result.exit_code == 1 and "stitch: true" in result.output
