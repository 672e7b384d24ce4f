"""The provisional profile key and the profiles table (spec sections 3 and 5)."""

from __future__ import annotations

from tests.conftest import identify, track

PROJECT = """
    audiences:
      - name: billing
        where: email = 'billing@acme.com'
"""


def test_profile_email_comes_from_identify_traits_or_context_traits(workspace):
    ws = workspace(PROJECT)
    ws.land(
        identify("u1", "2026-06-01T00:00:00Z", email="  Alice@Example.COM "),
        {**track("u2", "Login", "2026-06-02T00:00:00Z"), "context": {"traits": {"email": "Bob@x.io"}}},
    )
    ws.run()
    emails = dict(ws.query("SELECT profile_id, email FROM cdp.profiles"))
    assert emails == {"u1": "alice@example.com", "u2": "bob@x.io"}


def test_group_traits_email_is_the_account_not_the_user(workspace):
    """Regression: a group call's traits.email (the account's billing address) became the
    user's profile email."""
    ws = workspace(PROJECT)
    ws.land(
        identify("u1", "2026-06-01T00:00:00Z", email="alice@example.com"),
        {"type": "group", "messageId": "g1", "userId": "u1", "groupId": "acme",
         "traits": {"email": "billing@acme.com"}, "timestamp": "2026-06-02T00:00:00Z"},
    )
    ws.run()
    assert ws.query("SELECT email FROM cdp.profiles WHERE profile_id = 'u1'") == [("alice@example.com",)]
    assert ws.members("billing") == set()


def test_anonymous_ids_are_sorted_distinct_and_first_last_seen_cover_every_type(workspace):
    ws = workspace(PROJECT)
    ws.land(
        identify("u1", "2026-06-01T00:00:00Z", anonymous="b-anon"),
        track("u1", "Login", "2026-06-03T00:00:00Z", anonymous="a-anon"),
        track("u1", "Login", "2026-06-04T00:00:00Z", anonymous="a-anon"),
        track("u1", "Login", "2026-06-05T00:00:00Z"),
    )
    ws.run()
    row = ws.warehouse.fetch_dicts("SELECT * FROM cdp.profiles WHERE profile_id = 'u1'")[0]
    assert row["anonymous_ids"] == ["a-anon", "b-anon"]
    assert (row["first_seen"].day, row["last_seen"].day) == (1, 5)
    assert row["user_id"] == "u1"
