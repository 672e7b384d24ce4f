"""Audience rules (spec section 5): events(...), events_where(...), traits and profile columns,
three-valued logic, in_audience / exclude, splits, division, and the audience_members table.

Every test lands a handful of events and runs at AS_OF = 2026-06-30T00:00:00Z, so
'30d' is [2026-05-31T00:00, 2026-06-30T00:00) and '60d..30d' is [2026-05-01, 2026-05-31).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from cdp_warehouse.hashing import split_for
from tests.conftest import AS_OF, identify, page, track


def _utc(value: datetime) -> datetime:
    """A timestamp read back from the warehouse (naive = UTC) as an aware UTC datetime."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# --- events(EVENT[, WINDOW]) -------------------------------------------------------------------


def test_events_in_a_window_counts_only_that_event_in_the_half_open_window(workspace):
    ws = workspace("""
        audiences:
          - name: recent_reporters
            where: events('Report Generated', '30d') >= 1
    """)
    ws.land(
        # exactly as_of - 30d: the window's closed start, counted
        track("on_start", "Report Generated", "2026-05-31T00:00:00Z"),
        # one second too early
        track("too_early", "Report Generated", "2026-05-30T23:59:59Z"),
        # at as-of: the window's open end (and the future), not counted
        track("at_as_of", "Report Generated", "2026-06-30T00:00:00Z"),
        # in the window but another event
        track("other_event", "Report Viewed", "2026-06-15T00:00:00Z"),
        track("inside", "Report Generated", "2026-06-29T23:59:59Z"),
        # offsets are honoured: 01:30+02:00 on the 30th is 23:30 UTC on the 29th, inside
        track("offset_inside", "Report Generated", "2026-06-30T01:30:00+02:00"),
        # 01:00+02:00 on May 31st is 23:00 UTC on May 30th, too early
        track("offset_too_early", "Report Generated", "2026-05-31T01:00:00+02:00"),
    )
    ws.run()
    assert ws.members("recent_reporters") == {"on_start", "inside", "offset_inside"}


@pytest.mark.parametrize(("window", "inside", "outside"), [
    ("90m", "2026-06-29T22:30:00Z", "2026-06-29T22:29:59Z"),
    ("12h", "2026-06-29T12:00:00Z", "2026-06-29T11:59:59Z"),
    ("2w", "2026-06-16T00:00:00Z", "2026-06-15T23:59:59Z"),
    ("1w..3d", "2026-06-23T00:00:00Z", "2026-06-27T00:00:00Z"),
])
def test_windows_in_minutes_hours_and_weeks(workspace, window, inside, outside):
    ws = workspace(f"""
        audiences:
          - name: windowed
            where: events('Visit', '{window}') > 0
    """)
    ws.land(track("inside", "Visit", inside), track("outside", "Visit", outside))
    ws.run()
    assert ws.members("windowed") == {"inside"}


def test_events_match_track_page_and_screen_names_alike(workspace):
    ws = workspace("""
        audiences:
          - name: saw_pricing
            where: events('Pricing', '30d') > 0
          - name: saw_pricing_page
            where: events_where('Pricing', '30d', 'type = ''page''') > 0
    """)
    ws.land(
        track("tracked", "Pricing", "2026-06-10T00:00:00Z"),
        page("paged", "Pricing", "2026-06-10T00:00:00Z"),
        {"type": "screen", "messageId": "screen-1", "userId": "screened", "name": "Pricing",
         "properties": {}, "timestamp": "2026-06-10T00:00:00Z"},
        page("elsewhere", "Docs", "2026-06-10T00:00:00Z"),
    )
    ws.run()
    assert ws.members("saw_pricing") == {"tracked", "paged", "screened"}
    assert ws.members("saw_pricing_page") == {"paged"}


def test_a_profile_with_no_events_has_zero_counts(workspace):
    ws = workspace("""
        traits:
          - name: plan
            trait: {trait: plan}
        audiences:
          - name: silent_pros
            where: plan = 'pro' AND events('*', '30d') = 0 AND events('*') = 0
    """)
    ws.land(
        identify("identified_only", "2026-06-10T00:00:00Z", plan="pro"),
        identify("active", "2026-06-10T00:00:00Z", plan="pro"),
        track("active", "Visit", "2026-06-10T00:00:00Z"),
    )
    ws.run()
    assert ws.members("silent_pros") == {"identified_only"}


def test_events_star_without_window_counts_every_track_page_screen_event_before_as_of(workspace):
    ws = workspace("""
        audiences:
          - name: three_events_ever
            where: events('*') >= 3
    """)
    ws.land(
        # two tracks years ago and a page: three events of any name over all history
        track("veteran", "Signed Up", "2020-01-01T00:00:00Z"),
        track("veteran", "Report Generated", "2024-03-01T00:00:00Z"),
        page("veteran", "Pricing", "2026-06-01T00:00:00Z"),
        # a track and a screen: screens are events
        track("mobile", "Signed Up", "2026-01-01T00:00:00Z"),
        {"type": "screen", "messageId": "screen-m1", "userId": "mobile", "name": "Home",
         "properties": {}, "timestamp": "2026-02-01T00:00:00Z"},
        {"type": "screen", "messageId": "screen-m2", "userId": "mobile", "name": "Settings",
         "properties": {}, "timestamp": "2026-03-01T00:00:00Z"},
        # two tracks and an identify: identify calls are not events
        track("identified", "Signed Up", "2026-01-01T00:00:00Z"),
        track("identified", "Report Generated", "2026-02-01T00:00:00Z"),
        identify("identified", "2026-03-01T00:00:00Z", plan="pro"),
        # two tracks before as-of and one after: the future is ignored
        track("future", "Signed Up", "2026-01-01T00:00:00Z"),
        track("future", "Report Generated", "2026-02-01T00:00:00Z"),
        track("future", "Report Generated", "2026-07-01T00:00:00Z"),
    )
    ws.run()
    assert ws.members("three_events_ever") == {"veteran", "mobile"}


def test_events_star_with_a_range_window_counts_only_between_60_and_30_days_ago(workspace):
    ws = workspace("""
        audiences:
          - name: active_a_month_ago
            where: events('*', '60d..30d') > 0
    """)
    ws.land(
        track("on_start", "Anything", "2026-05-01T00:00:00Z"),  # as_of - 60d: included
        track("before_start", "Anything", "2026-04-30T23:59:59Z"),  # too old
        track("on_end", "Anything", "2026-05-31T00:00:00Z"),  # as_of - 30d: excluded (open end)
        track("just_before_end", "Anything", "2026-05-30T23:59:59Z"),  # included
        track("recent_only", "Anything", "2026-06-20T00:00:00Z"),
        page("paged", "Docs", "2026-05-15T00:00:00Z"),  # pages are events too
    )
    ws.run()
    assert ws.members("active_a_month_ago") == {"on_start", "just_before_end", "paged"}


def test_events_where_filters_on_a_numeric_property(workspace):
    ws = workspace("""
        audiences:
          - name: big_spenders
            where: events_where('Payment Processed', '30d', 'properties.revenue > 100') > 0
    """)
    ws.land(
        track("big", "Payment Processed", "2026-06-10T00:00:00Z", revenue=150),
        track("small", "Payment Processed", "2026-06-10T00:00:00Z", revenue=50),
        track("exactly_100", "Payment Processed", "2026-06-10T00:00:00Z", revenue=100),
        track("long_ago", "Payment Processed", "2026-05-01T00:00:00Z", revenue=150),
        # a numeric string is read as a number
        track("string_number", "Payment Processed", "2026-06-10T00:00:00Z", revenue="250"),
        # a non-numeric string is null: not a member, and no error
        track("garbage", "Payment Processed", "2026-06-10T00:00:00Z", revenue="lots"),
        # a big amount on another event
        track("failed", "Payment Failed", "2026-06-10T00:00:00Z", revenue=500),
        # 9 > 100 is false as numbers but '9' > '100' is true as text
        track("nine", "Payment Processed", "2026-06-10T00:00:00Z", revenue=9),
    )
    ws.run()
    assert ws.members("big_spenders") == {"big", "string_number"}


def test_events_where_counts_only_the_matching_events(workspace):
    ws = workspace("""
        audiences:
          - name: two_big_payments
            where: events_where('Payment Processed', '30d', 'properties.revenue > 100') >= 2
    """)
    ws.land(
        track("two_big", "Payment Processed", "2026-06-10T00:00:00Z", revenue=150),
        track("two_big", "Payment Processed", "2026-06-11T00:00:00Z", revenue=101),
        track("one_big_one_small", "Payment Processed", "2026-06-10T00:00:00Z", revenue=150),
        track("one_big_one_small", "Payment Processed", "2026-06-11T00:00:00Z", revenue=10),
    )
    ws.run()
    assert ws.members("two_big_payments") == {"two_big"}


def test_a_rule_combines_event_counts_traits_and_profile_columns(workspace):
    ws = workspace("""
        traits:
          - name: plan
            trait: {trait: plan}
        audiences:
          - name: acme_pros
            where: >
              plan = 'pro'
              AND email LIKE '%@acme.com'
              AND user_id <> 'blocked'
              AND first_seen < TIMESTAMP '2026-01-01 00:00:00'
              AND last_seen >= TIMESTAMP '2026-06-01 00:00:00'
              AND events('Report Generated', '30d') > 0
    """)

    def customer(user, email="x@acme.com", plan="pro", first="2025-06-01T00:00:00Z",
                 last="2026-06-15T00:00:00Z", event="Report Generated"):
        return [
            identify(user, first, plan=plan, email=email),
            track(user, "Signed Up", first),
            track(user, event, last),
        ]

    ws.land(
        *customer("ok"),
        *customer("other_domain", email="x@gmail.com"),
        *customer("free_plan", plan="free"),
        *customer("blocked"),
        *customer("newcomer", first="2026-02-01T00:00:00Z"),
        *customer("lapsed", last="2026-05-20T00:00:00Z", event="Signed Up"),
        *customer("no_reports", event="Report Viewed"),
    )
    ws.run()
    assert ws.members("acme_pros") == {"ok"}


def test_profile_email_in_a_rule_is_trimmed_and_lower_cased(workspace):
    ws = workspace("""
        audiences:
          - name: acme
            where: email = 'ann@acme.com'
    """)
    ws.land(identify("ann", "2026-06-01T00:00:00Z", email="  Ann@ACME.com "))
    ws.run()
    assert ws.members("acme") == {"ann"}


# --- the example churn_risk rule ---------------------------------------------------------------

CHURN_RISK = """
    traits:
      - name: plan
        trait: {trait: plan}
    audiences:
      - name: churn_risk
        where: >
          events('*', '60d..30d') > 0
          AND events('*', '30d') = 0
          AND plan <> 'free'
          AND events('Support Contacted', '30d') = 0
"""


def test_churn_risk_keeps_only_the_paying_users_who_went_silent(workspace):
    ws = workspace(CHURN_RISK)

    def paying(user, plan="pro"):
        return identify(user, "2026-01-01T00:00:00Z", plan=plan)

    ws.land(
        # active 45 days ago, silent since, paying: the one at risk
        paying("at_risk"), track("at_risk", "Report Generated", "2026-05-15T00:00:00Z"),
        # last event one second before the 30-day line: still silent for 30 days
        paying("edge_silent"), track("edge_silent", "Report Generated", "2026-05-30T23:59:59Z"),
        # a later identify is not activity: still silent
        paying("identified_lately"), track("identified_lately", "Report Generated", "2026-05-15T00:00:00Z"),
        identify("identified_lately", "2026-06-20T00:00:00Z", plan="enterprise"),
        # fails "silent for 30": active again recently
        paying("came_back"), track("came_back", "Report Generated", "2026-05-15T00:00:00Z"),
        track("came_back", "Report Generated", "2026-06-20T00:00:00Z"),
        # fails "silent for 30" exactly on the line (30d is as_of - 30d <= ts)
        paying("edge_active"), track("edge_active", "Report Generated", "2026-05-31T00:00:00Z"),
        # fails "active 31-60 days ago": only active long before
        paying("long_gone"), track("long_gone", "Report Generated", "2026-03-01T00:00:00Z"),
        # fails "paying": free plan
        paying("freeloader", plan="free"), track("freeloader", "Report Generated", "2026-05-15T00:00:00Z"),
        # fails "paying": no plan at all (NULL <> 'free' is not true)
        track("no_plan", "Report Generated", "2026-05-15T00:00:00Z"),
        # fails "no support contact in 30d"
        paying("complained"), track("complained", "Report Generated", "2026-05-15T00:00:00Z"),
        track("complained", "Support Contacted", "2026-06-25T00:00:00Z"),
        # a page in the last 30 days is activity too
        paying("browsing"), track("browsing", "Report Generated", "2026-05-15T00:00:00Z"),
        page("browsing", "Pricing", "2026-06-25T00:00:00Z"),
        # activity after as-of is ignored: at AS_OF this user is still at risk
        paying("future_return"), track("future_return", "Report Generated", "2026-05-15T00:00:00Z"),
        track("future_return", "Report Generated", "2026-07-02T00:00:00Z"),
    )
    result = ws.run()
    expected = {"at_risk", "edge_silent", "identified_lately", "future_return"}
    assert ws.members("churn_risk") == expected
    assert result.audience_sizes == {"churn_risk": len(expected)}


def test_churn_risk_with_the_example_splits_keeps_every_member(workspace):
    ws = workspace(CHURN_RISK.replace("        where: >", "        splits: {treatment: 90, holdout: 10}\n        where: >"))
    users = [f"user{i}" for i in range(20)]
    ws.land(*(message for user in users for message in (
        identify(user, "2026-01-01T00:00:00Z", plan="pro"),
        track(user, "Report Generated", "2026-05-15T00:00:00Z"),
    )))
    ws.run()
    rows = dict(ws.query("SELECT profile_id, split FROM cdp.audience_members WHERE audience = 'churn_risk'"))
    splits = {"treatment": 90, "holdout": 10}
    assert rows == {user: split_for("churn_risk", user, splits) for user in users}


# --- three-valued logic ------------------------------------------------------------------------


def test_not_equal_excludes_a_profile_with_no_plan_and_coalesce_includes_it(workspace):
    ws = workspace("""
        traits:
          - name: plan
            trait: {trait: plan}
        audiences:
          - name: strict_not_free
            where: plan <> 'free'
          - name: lenient_not_free
            where: coalesce(plan, '') <> 'free'
    """)
    ws.land(
        identify("pro", "2026-06-01T00:00:00Z", plan="pro"),
        identify("free", "2026-06-01T00:00:00Z", plan="free"),
        identify("unknown", "2026-06-01T00:00:00Z", name="No Plan"),
        track("anonymous_plan", "Signed Up", "2026-06-01T00:00:00Z"),
    )
    ws.run()
    assert ws.members("strict_not_free") == {"pro"}
    assert ws.members("lenient_not_free") == {"pro", "unknown", "anonymous_plan"}


def test_not_of_a_null_comparison_is_not_a_member_either(workspace):
    ws = workspace("""
        traits:
          - name: plan
            trait: {trait: plan}
        audiences:
          - name: not_free
            where: NOT (plan = 'free')
    """)
    ws.land(
        identify("pro", "2026-06-01T00:00:00Z", plan="pro"),
        identify("free", "2026-06-01T00:00:00Z", plan="free"),
        identify("unknown", "2026-06-01T00:00:00Z", name="No Plan"),
    )
    ws.run()
    assert ws.members("not_free") == {"pro"}


# --- in_audience and exclude -------------------------------------------------------------------

NESTED = """
    traits:
      - name: plan
        trait: {trait: plan}
    audiences:
      - name: vips
        where: plan = 'vip'
      - name: reporters
        where: events('Report Generated') > 0
        exclude: [vips]
      - name: reporters_again
        where: in_audience('reporters')
      - name: not_reporters
        where: events('*') > 0 AND NOT in_audience('reporters')
      - name: everyone_but_reporters
        where: events('*') > 0
        exclude: [reporters]
"""


def test_in_audience_sees_the_other_audiences_exclusions(workspace):
    ws = workspace(NESTED)
    ws.land(
        # a reporter, not a vip: in reporters, hence in reporters_again
        track("plain", "Report Generated", "2026-06-01T00:00:00Z"),
        # a reporter who is a vip: excluded from reporters, so not in reporters_again
        identify("vip", "2026-06-01T00:00:00Z", plan="vip"),
        track("vip", "Report Generated", "2026-06-01T00:00:00Z"),
        # active, never reported
        track("viewer", "Report Viewed", "2026-06-01T00:00:00Z"),
    )
    ws.run()
    assert ws.members("vips") == {"vip"}
    assert ws.members("reporters") == {"plain"}
    assert ws.members("reporters_again") == {"plain"}
    assert ws.members("not_reporters") == {"vip", "viewer"}
    assert ws.members("everyone_but_reporters") == {"vip", "viewer"}


def test_in_audience_and_exclude_across_files(workspace):
    ws = workspace("""
        audiences:
          - name: buyers_not_refunded
            where: in_audience('buyers')
            exclude: [refunded]
    """, other="""
        audiences:
          - name: buyers
            where: events('Order Completed') > 0
          - name: refunded
            where: events('Order Refunded') > 0
    """)
    ws.land(
        track("kept", "Order Completed", "2026-06-01T00:00:00Z"),
        track("refunded", "Order Completed", "2026-06-01T00:00:00Z"),
        track("refunded", "Order Refunded", "2026-06-02T00:00:00Z"),
        track("browser", "Product Viewed", "2026-06-01T00:00:00Z"),
    )
    ws.run()
    assert ws.members("buyers_not_refunded") == {"kept"}


def _ids_by_split(audience: str, splits: dict[str, int], wanted: dict[str, int]) -> list[str]:
    """Profile ids chosen so that each split of ``wanted`` has that many of them."""
    chosen: dict[str, list[str]] = {name: [] for name in wanted}
    index = 0
    while any(len(chosen[name]) < count for name, count in wanted.items()):
        candidate = f"person{index}"
        name = split_for(audience, candidate, splits)
        if name in chosen and len(chosen[name]) < wanted[name]:
            chosen[name].append(candidate)
        index += 1
    return [profile for ids in chosen.values() for profile in ids]


def test_holdout_members_are_members_for_in_audience_and_exclude(workspace):
    splits = {"treatment": 90, "holdout": 10}
    ws = workspace("""
        audiences:
          - name: tested
            where: events('Report Generated') > 0
            splits: {treatment: 90, holdout: 10}
          - name: tested_again
            where: in_audience('tested')
          - name: untested
            where: events('*') > 0
            exclude: [tested]
    """)
    people = _ids_by_split("tested", splits, {"treatment": 3, "holdout": 3})
    ws.land(
        *(track(person, "Report Generated", "2026-06-01T00:00:00Z") for person in people),
        track("outsider", "Report Viewed", "2026-06-01T00:00:00Z"),
    )
    ws.run()
    holdout = {row[0] for row in ws.query(
        "SELECT profile_id FROM cdp.audience_members WHERE audience = 'tested' AND split = 'holdout'")}
    assert len(holdout) == 3
    assert ws.members("tested") == set(people)
    assert ws.members("tested_again") == set(people)  # holdout included
    assert ws.members("untested") == {"outsider"}  # holdout excluded too


# --- splits ------------------------------------------------------------------------------------

SPLIT_PROJECT = """
    audiences:
      - name: experiment
        where: events('Signed Up') > 0
        splits: {treatment: 90, holdout: 10}
      - name: plain
        where: events('Signed Up') > 0
"""


def _land_signups(ws, count: int) -> list[str]:
    users = [f"user{i:04d}" for i in range(count)]
    ws.land(*(track(user, "Signed Up", "2026-06-01T00:00:00Z") for user in users))
    return users


def _splits(ws, audience: str) -> dict[str, str | None]:
    return dict(ws.query("SELECT profile_id, split FROM cdp.audience_members WHERE audience = ?", audience))


def test_every_member_gets_the_split_of_the_documented_hash(workspace):
    ws = workspace(SPLIT_PROJECT)
    users = _land_signups(ws, 300)
    ws.run()
    splits = _splits(ws, "experiment")
    assert set(splits) == set(users)
    expected = {user: split_for("experiment", user, {"treatment": 90, "holdout": 10}) for user in users}
    assert splits == expected
    holdout = sum(1 for value in splits.values() if value == "holdout")
    assert set(splits.values()) == {"treatment", "holdout"}
    assert 10 <= holdout <= 55, f"{holdout} of 300 in holdout, expected about 30"


def test_an_audience_without_splits_records_a_null_split(workspace):
    ws = workspace(SPLIT_PROJECT)
    users = _land_signups(ws, 20)
    ws.run()
    assert _splits(ws, "plain") == {user: None for user in users}


def test_splits_are_deterministic_across_runs_and_warehouses(workspace):
    first = workspace(SPLIT_PROJECT)
    users = _land_signups(first, 50)
    first.run()
    before = _splits(first, "experiment")
    first.run(AS_OF + timedelta(days=1))
    assert _splits(first, "experiment") == before

    second = workspace(SPLIT_PROJECT)
    # same people, landed in another order, in another warehouse
    second.land(*(track(user, "Signed Up", "2026-06-02T00:00:00Z") for user in reversed(users)))
    second.run()
    assert _splits(second, "experiment") == before


def test_the_split_depends_on_the_audience_name(workspace):
    ws = workspace("""
        audiences:
          - name: first_test
            where: events('Signed Up') > 0
            splits: {a: 50, b: 50}
          - name: second_test
            where: events('Signed Up') > 0
            splits: {a: 50, b: 50}
    """)
    users = _land_signups(ws, 100)
    ws.run()
    first, second = _splits(ws, "first_test"), _splits(ws, "second_test")
    assert first == {user: split_for("first_test", user, {"a": 50, "b": 50}) for user in users}
    assert second == {user: split_for("second_test", user, {"a": 50, "b": 50}) for user in users}
    assert first != second


# --- division ----------------------------------------------------------------------------------


def test_division_in_a_rule_is_true_division_and_by_zero_is_not_a_member(workspace):
    ws = workspace("""
        traits:
          - name: reports
            count: {event: Report Generated}
          - name: visits
            count: {event: Visit}
        audiences:
          - name: half_reporters
            where: reports / visits >= 0.5
          - name: event_ratio
            where: events('Report Generated') / events('Visit') > 0
          - name: no_ratio
            where: (reports / visits) IS NULL
    """)
    ws.land(
        # 1 / 2 = 0.5 (integer division would say 0)
        track("half", "Report Generated", "2026-06-01T00:00:00Z"),
        track("half", "Visit", "2026-06-01T00:00:00Z"),
        track("half", "Visit", "2026-06-02T00:00:00Z"),
        # 1 / 3: a third, below half but above zero
        track("third", "Report Generated", "2026-06-01T00:00:00Z"),
        *(track("third", "Visit", f"2026-06-0{day}T00:00:00Z") for day in (1, 2, 3)),
        # 3 / 0: null, not a member, and no division-by-zero error
        *(track("zero_visits", "Report Generated", f"2026-06-0{day}T00:00:00Z") for day in (1, 2, 3)),
    )
    ws.run()
    assert ws.members("half_reporters") == {"half"}
    assert ws.members("event_ratio") == {"half", "third"}
    assert ws.members("no_ratio") == {"zero_visits"}


def test_division_in_events_where_condition_is_true_division(workspace):
    ws = workspace("""
        audiences:
          - name: discounted
            where: events_where('Order Completed', '30d', 'properties.discount / properties.total >= 0.25') > 0
    """)
    ws.land(
        track("quarter_off", "Order Completed", "2026-06-10T00:00:00Z", discount=1, total=4),
        track("tenth_off", "Order Completed", "2026-06-10T00:00:00Z", discount=1, total=10),
        track("free_order", "Order Completed", "2026-06-10T00:00:00Z", discount=0, total=0),
    )
    ws.run()
    assert ws.members("discounted") == {"quarter_off"}


# --- the audience_members table ----------------------------------------------------------------


def test_audience_members_has_the_documented_columns_and_the_runs_as_of(workspace):
    ws = workspace(SPLIT_PROJECT)
    _land_signups(ws, 5)
    as_of = datetime(2026, 7, 15, 14, 30, 5, tzinfo=timezone(timedelta(hours=2)))  # 12:30:05 UTC
    ws.run(as_of)
    assert ws.warehouse.columns("cdp", "audience_members") == ["audience", "profile_id", "split", "as_of"]
    rows = ws.query("SELECT DISTINCT as_of FROM cdp.audience_members")
    assert [_utc(row[0]) for row in rows] == [datetime(2026, 7, 15, 12, 30, 5, tzinfo=UTC)]
    audiences = {row[0] for row in ws.query("SELECT audience FROM cdp.audience_members")}
    assert audiences == {"experiment", "plain"}


def test_audience_members_holds_only_the_latest_run(workspace):
    ws = workspace("""
        audiences:
          - name: recent
            where: events('*', '7d') > 0
    """)
    ws.land(
        track("early", "Visit", "2026-06-01T00:00:00Z"),
        track("late", "Visit", "2026-06-25T00:00:00Z"),
    )
    ws.run(datetime(2026, 6, 5, tzinfo=UTC))
    assert ws.members("recent") == {"early"}
    ws.run(AS_OF)
    assert ws.members("recent") == {"late"}
    assert [_utc(row[0]) for row in ws.query("SELECT DISTINCT as_of FROM cdp.audience_members")] == [AS_OF]


@pytest.mark.parametrize("rule", ["events('Visit') > 100", "1 = 0"])
def test_an_empty_audience_has_no_rows_and_size_zero(workspace, rule):
    ws = workspace(f"""
        audiences:
          - name: nobody
            where: "{rule}"
    """)
    ws.land(track("someone", "Visit", "2026-06-01T00:00:00Z"))
    result = ws.run()
    assert ws.members("nobody") == set()
    assert result.audience_sizes == {"nobody": 0}
