"""JSON paths in analysts' SQL: read as numbers where the SQL needs a number (spec section 4)."""

from __future__ import annotations

import pytest

from tests.conftest import track


@pytest.mark.parametrize(
    "where, expected",
    [
        ("abs(properties.x) > 5", 2),          # -7 and 9
        ("round(properties.x) = 9", 1),
        ("coalesce(properties.x, 0) > 5", 1),  # missing x → 0
        ("properties.x::int > 5", 1),         # 'abc' does not convert: null, not an error
        ("coalesce(properties.x, properties.y) > 1", 2),  # y=3 stands in where x is missing
        ("coalesce(properties.kind, 'none') = 'none'", 4),
    ],
)
def test_json_paths_in_numeric_positions_read_as_numbers(workspace, where, expected):
    """Regression: these validated, then failed at `cdp run` (abs(VARCHAR), mixing VARCHAR
    and INTEGER, a conversion error on a non-number)."""
    ws = workspace(f"""
        traits:
          - name: hits
            count: {{event: E, where: "{where}"}}
    """)
    ws.land(
        track("u", "E", "2026-06-01T00:00:00Z", x=-7),
        track("u", "E", "2026-06-02T00:00:00Z", x="9"),
        track("u", "E", "2026-06-03T00:00:00Z", x="abc"),
        track("u", "E", "2026-06-04T00:00:00Z", y=3),
    )
    ws.run()
    assert ws.traits()["u"]["hits"] == expected
