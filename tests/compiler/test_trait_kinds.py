"""Trait kinds of spec section 4, windows and as-of of section 2, landing rules of section 1
that traits depend on. Each test lands a handful of messages and reads ``profile_traits``."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

import pytest

from tests.conftest import AS_OF, identify, page, track

_ids = itertools.count(1)


def message(kind: str, user: str | None, at: str | None, anonymous: str | None = None, **fields) -> dict:
    """Any Segment message (screen, group, alias, or one with context/sentAt/receivedAt)."""
    return {"type": kind, "messageId": f"tk{next(_ids)}", "userId": user, "anonymousId": anonymous,
            "timestamp": at, **fields}


def screen(user: str, name: str, at: str, **properties) -> dict:
    return message("screen", user, at, name=name, properties=properties)


def with_context(msg: dict, context: dict) -> dict:
    return {**msg, "context": context}


def one_trait(workspace, trait_yaml: str, *messages, as_of: datetime = AS_OF) -> dict[str, dict]:
    """A project with just ``trait_yaml`` (one YAML list item), run at ``as_of``; profile → row."""
    lines = trait_yaml.strip().splitlines()
    indented = "\n".join(["  - " + lines[0], *("    " + line for line in lines[1:])])
    ws = workspace("traits:\n" + indented + "\n")
    ws.land(*messages)
    ws.run(as_of=as_of)
    return ws.traits()


def value(workspace, trait_yaml: str, *messages, user: str = "u1", as_of: datetime = AS_OF):
    """The value of the project's only trait (named ``t``) for ``user``."""
    return one_trait(workspace, trait_yaml, *messages, as_of=as_of)[user]["t"]


# ---------------------------------------------------------------- count and `event`


def test_count_counts_the_named_event_only(workspace):
    assert value(workspace, "name: t\ncount: {event: Signed Up}",
                 track("u1", "Signed Up", "2026-06-01T00:00:00Z"),
                 track("u1", "Signed Up", "2026-06-02T00:00:00Z"),
                 track("u1", "Logged In", "2026-06-03T00:00:00Z")) == 2


def test_count_with_a_list_of_events_counts_each_of_them(workspace):
    assert value(workspace, "name: t\ncount: {event: [A, B]}",
                 track("u1", "A", "2026-06-01T00:00:00Z"),
                 track("u1", "B", "2026-06-02T00:00:00Z"),
                 track("u1", "C", "2026-06-03T00:00:00Z")) == 2


def test_count_star_counts_track_page_and_screen_events(workspace):
    assert value(workspace, "name: t\ncount: {event: '*'}",
                 track("u1", "A", "2026-06-01T00:00:00Z"),
                 page("u1", "Home", "2026-06-02T00:00:00Z"),
                 screen("u1", "Settings", "2026-06-03T00:00:00Z")) == 3


def test_event_defaults_to_star(workspace):
    assert value(workspace, "name: t\ncount: {}",
                 track("u1", "A", "2026-06-01T00:00:00Z"),
                 page("u1", "Home", "2026-06-02T00:00:00Z")) == 2


def test_identify_group_and_alias_are_not_events(workspace):
    assert value(workspace, "name: t\ncount: {event: '*'}",
                 track("u1", "A", "2026-06-01T00:00:00Z"),
                 identify("u1", "2026-06-02T00:00:00Z", plan="pro"),
                 message("group", "u1", "2026-06-03T00:00:00Z", groupId="g1", traits={"name": "Acme"}),
                 message("alias", "u1", "2026-06-04T00:00:00Z", previousId="anon-1")) == 1


def test_page_and_screen_names_match_event_like_track_names(workspace):
    assert value(workspace, "name: t\ncount: {event: Pricing}",
                 page("u1", "Pricing", "2026-06-01T00:00:00Z"),
                 screen("u1", "Pricing", "2026-06-02T00:00:00Z"),
                 track("u1", "Pricing", "2026-06-03T00:00:00Z"),
                 page("u1", "Home", "2026-06-04T00:00:00Z")) == 3


def test_where_can_tell_pages_from_tracks_by_type(workspace):
    assert value(workspace, "name: t\ncount: {event: Pricing, where: \"type = 'page'\"}",
                 page("u1", "Pricing", "2026-06-01T00:00:00Z"),
                 track("u1", "Pricing", "2026-06-03T00:00:00Z")) == 1


def test_count_is_per_profile(workspace):
    traits = one_trait(workspace, "name: t\ncount: {event: A}",
                       track("u1", "A", "2026-06-01T00:00:00Z"),
                       track("u2", "A", "2026-06-01T00:00:00Z"),
                       track("u2", "A", "2026-06-02T00:00:00Z"),
                       track(None, "A", "2026-06-02T00:00:00Z", anonymous="anon-9"))
    assert {profile: row["t"] for profile, row in traits.items()} == {"u1": 1, "u2": 2, "anon-9": 1}


# ---------------------------------------------------------------- where


def test_where_on_a_text_property(workspace):
    assert value(workspace, "name: t\ncount: {event: Upgraded, where: \"properties.triggered_by = 'self-service'\"}",
                 track("u1", "Upgraded", "2026-06-01T00:00:00Z", triggered_by="self-service"),
                 track("u1", "Upgraded", "2026-06-02T00:00:00Z", triggered_by="sales"),
                 track("u1", "Upgraded", "2026-06-03T00:00:00Z")) == 1


def test_where_numeric_comparison_reads_the_property_as_a_number(workspace):
    """As text, '9' > '10'; read as a number it is not. Numeric strings count as numbers."""
    assert value(workspace, "name: t\ncount: {event: Paid, where: \"properties.amount > 10\"}",
                 track("u1", "Paid", "2026-06-01T00:00:00Z", amount=9),
                 track("u1", "Paid", "2026-06-02T00:00:00Z", amount=10),
                 track("u1", "Paid", "2026-06-03T00:00:00Z", amount=11),
                 track("u1", "Paid", "2026-06-04T00:00:00Z", amount=100),
                 track("u1", "Paid", "2026-06-05T00:00:00Z", amount="25.5"),
                 track("u1", "Paid", "2026-06-06T00:00:00Z", amount="lots")) == 3


def test_where_between_and_in_read_the_property_as_a_number(workspace):
    ws = workspace("""
        traits:
          - name: mid
            count: {where: "properties.amount BETWEEN 5 AND 15"}
          - name: picked
            count: {where: "properties.amount IN (10, 20)"}
    """)
    ws.land(*(track("u1", "Paid", f"2026-06-0{i}T00:00:00Z", amount=amount)
              for i, amount in enumerate([4, "5", 10.0, 15, 20, "x"], start=1)))
    ws.run()
    row = ws.traits()["u1"]
    assert (row["mid"], row["picked"]) == (3, 2)


def test_where_arithmetic_on_properties_is_numeric(workspace):
    assert value(workspace, "name: t\ncount: {where: \"properties.price * properties.qty > 100\"}",
                 track("u1", "Bought", "2026-06-01T00:00:00Z", price=30, qty=4),
                 track("u1", "Bought", "2026-06-02T00:00:00Z", price="9.5", qty=10),
                 track("u1", "Bought", "2026-06-03T00:00:00Z", price=60, qty="2")) == 2


def test_where_text_comparison_keeps_leading_zeros(workspace):
    """Compared with a string, a JSON path is text: '007' is not '7'."""
    assert value(workspace, "name: t\ncount: {where: \"properties.code = '007'\"}",
                 track("u1", "A", "2026-06-01T00:00:00Z", code="007"),
                 track("u1", "A", "2026-06-02T00:00:00Z", code="7")) == 1


def test_event_names_with_quotes_match_exactly(workspace):
    assert value(workspace, "name: t\ncount: {event: [\"Bob's Report\", \"Other\"]}",
                 track("u1", "Bob's Report", "2026-06-01T00:00:00Z"),
                 track("u1", "Bobs Report", "2026-06-02T00:00:00Z")) == 1


def test_where_on_a_nested_context_path(workspace):
    assert value(workspace, "name: t\ncount: {where: \"context.page.path = '/pricing'\"}",
                 with_context(track("u1", "A", "2026-06-01T00:00:00Z"), {"page": {"path": "/pricing"}}),
                 with_context(track("u1", "A", "2026-06-02T00:00:00Z"), {"page": {"path": "/home"}}),
                 with_context(track("u1", "A", "2026-06-03T00:00:00Z"), {"ip": "1.2.3.4"})) == 1


def test_where_combines_with_event_and_window(workspace):
    assert value(workspace, "name: t\ncount: {event: Paid, window: 30d, where: \"properties.plan = 'pro'\"}",
                 track("u1", "Paid", "2026-06-10T00:00:00Z", plan="pro"),
                 track("u1", "Paid", "2026-05-10T00:00:00Z", plan="pro"),  # outside the window
                 track("u1", "Refund", "2026-06-10T00:00:00Z", plan="pro"),  # other event
                 track("u1", "Paid", "2026-06-11T00:00:00Z", plan="free")) == 1


# ---------------------------------------------------------------- numeric kinds


def _paid(amounts) -> list[dict]:
    return [track("u1", "Paid", f"2026-06-{day:02d}T00:00:00Z", amount=amount)
            for day, amount in enumerate(amounts, start=1)]


def test_sum_reads_json_numbers_and_numeric_strings(workspace):
    assert value(workspace, "name: t\nsum: {event: Paid, property: amount}",
                 *_paid([10, "19.99", 5.5])) == pytest.approx(35.49)


def test_sum_treats_non_numeric_strings_and_booleans_as_null(workspace):
    assert value(workspace, "name: t\nsum: {event: Paid, property: amount}",
                 *_paid([10, "abc", True, False, None, "19.99"])) == pytest.approx(29.99)


def test_sum_is_a_double(workspace):
    result = value(workspace, "name: t\nsum: {event: Paid, property: amount}", *_paid([10, 5]))
    assert result == 15 and isinstance(result, float)


def test_avg_ignores_nulls_and_non_numbers(workspace):
    """Averaging 10 and 20 gives 15 whatever else is there; nulls are not zeros."""
    assert value(workspace, "name: t\navg: {event: Paid, property: amount}",
                 *_paid([10, "20", "abc", True, None]),
                 track("u1", "Paid", "2026-06-20T00:00:00Z")) == pytest.approx(15.0)


def test_min_and_max_compare_numerically_not_as_text(workspace):
    ws = workspace("""
        traits:
          - name: smallest
            min: {event: Paid, property: amount}
          - name: largest
            max: {event: Paid, property: amount}
    """)
    ws.land(*_paid([9, "10", 100, "2.5", "n/a", True]))
    ws.run()
    row = ws.traits()["u1"]
    assert (row["smallest"], row["largest"]) == (2.5, 100.0)


def test_numeric_property_on_a_nested_path(workspace):
    assert value(workspace, "name: t\nsum: {property: properties.order.total}",
                 track("u1", "Paid", "2026-06-01T00:00:00Z", order={"total": 12}),
                 track("u1", "Paid", "2026-06-02T00:00:00Z", order={"total": "8"})) == pytest.approx(20.0)


def test_numeric_kinds_honour_event_and_where(workspace):
    assert value(workspace, "name: t\nsum: {event: [Paid, Tipped], property: amount, where: \"properties.amount > 10\"}",
                 track("u1", "Paid", "2026-06-01T00:00:00Z", amount=50),
                 track("u1", "Tipped", "2026-06-02T00:00:00Z", amount=20),
                 track("u1", "Paid", "2026-06-03T00:00:00Z", amount=5),
                 track("u1", "Refunded", "2026-06-04T00:00:00Z", amount=1000)) == pytest.approx(70.0)


# ---------------------------------------------------------------- first / last


def test_first_and_last_take_the_earliest_and_latest_matching_values(workspace):
    ws = workspace("""
        traits:
          - name: first_source
            first: {event: Visited, property: source}
          - name: last_source
            last: {event: Visited, property: source}
    """)
    ws.land(
        track("u1", "Visited", "2026-06-02T00:00:00Z", source="google"),
        track("u1", "Visited", "2026-06-01T00:00:00Z", source="twitter"),  # landed later, happened earlier
        track("u1", "Visited", "2026-06-03T00:00:00Z", source="email"),
        track("u1", "Other", "2026-06-04T00:00:00Z", source="ignored"),
    )
    ws.run()
    row = ws.traits()["u1"]
    assert (row["first_source"], row["last_source"]) == ("twitter", "email")


def test_first_and_last_skip_events_without_the_property(workspace):
    ws = workspace("""
        traits:
          - name: first_source
            first: {property: source}
          - name: last_source
            last: {property: source}
    """)
    ws.land(
        track("u1", "Visited", "2026-06-01T00:00:00Z"),
        track("u1", "Visited", "2026-06-02T00:00:00Z", source=None),
        track("u1", "Visited", "2026-06-03T00:00:00Z", source="google"),
        track("u1", "Visited", "2026-06-04T00:00:00Z", source="email"),
        track("u1", "Visited", "2026-06-05T00:00:00Z", source=None),
        track("u1", "Visited", "2026-06-06T00:00:00Z"),
    )
    ws.run()
    row = ws.traits()["u1"]
    assert (row["first_source"], row["last_source"]) == ("google", "email")


def test_last_on_a_nested_context_path(workspace):
    assert value(workspace, "name: t\nlast: {property: context.campaign.name}",
                 with_context(track("u1", "A", "2026-06-01T00:00:00Z"), {"campaign": {"name": "spring"}}),
                 with_context(track("u1", "A", "2026-06-02T00:00:00Z"), {"campaign": {"name": "summer"}}),
                 with_context(track("u1", "A", "2026-06-03T00:00:00Z"), {"campaign": {}})) == "summer"


def test_last_within_a_window_ignores_later_events_outside_it(workspace):
    assert value(workspace, "name: t\nlast: {property: plan, window: 60d..30d}",
                 track("u1", "A", "2026-05-10T00:00:00Z", plan="basic"),
                 track("u1", "A", "2026-05-20T00:00:00Z", plan="pro"),
                 track("u1", "A", "2026-06-20T00:00:00Z", plan="enterprise")) == "pro"


def test_first_is_text_by_default_and_typed_on_request(workspace):
    ws = workspace("""
        traits:
          - name: as_text
            first: {property: amount}
          - name: as_number
            first: {property: amount, type: number}
    """)
    ws.land(track("u1", "A", "2026-06-01T00:00:00Z", amount=42))
    ws.run()
    row = ws.traits()["u1"]
    assert row["as_text"] == "42"
    assert row["as_number"] == 42.0


# ---------------------------------------------------------------- first_seen / last_seen


def test_first_seen_and_last_seen_are_timestamps_of_matching_events(workspace):
    ws = workspace("""
        traits:
          - name: first_paid
            first_seen: {event: Paid}
          - name: last_paid
            last_seen: {event: Paid}
    """)
    ws.land(
        track("u1", "Visited", "2026-05-01T00:00:00Z"),
        track("u1", "Paid", "2026-06-02T10:15:30.123456Z"),
        track("u1", "Paid", "2026-06-01T08:00:00Z"),
        track("u1", "Visited", "2026-06-25T00:00:00Z"),
    )
    ws.run()
    row = ws.traits()["u1"]
    assert row["first_paid"] == datetime(2026, 6, 1, 8, 0)
    assert row["last_paid"] == datetime(2026, 6, 2, 10, 15, 30, 123456)


def test_last_seen_ignores_identify_calls(workspace):
    assert value(workspace, "name: t\nlast_seen: {event: '*'}",
                 track("u1", "A", "2026-06-01T00:00:00Z"),
                 identify("u1", "2026-06-10T00:00:00Z", plan="pro")) == datetime(2026, 6, 1)


def test_first_seen_honours_where(workspace):
    assert value(workspace, "name: t\nfirst_seen: {where: \"properties.amount > 10\"}",
                 track("u1", "Paid", "2026-06-01T00:00:00Z", amount=5),
                 track("u1", "Paid", "2026-06-02T00:00:00Z", amount=50)) == datetime(2026, 6, 2)


# ---------------------------------------------------------------- most_frequent


def test_most_frequent_is_the_commonest_value(workspace):
    assert value(workspace, "name: t\nmost_frequent: {event: Report Generated, property: report_type}",
                 track("u1", "Report Generated", "2026-06-01T00:00:00Z", report_type="funnel"),
                 track("u1", "Report Generated", "2026-06-02T00:00:00Z", report_type="funnel"),
                 track("u1", "Report Generated", "2026-06-03T00:00:00Z", report_type="cohort"),
                 track("u1", "Exported", "2026-06-04T00:00:00Z", report_type="cohort"),
                 track("u1", "Exported", "2026-06-05T00:00:00Z", report_type="cohort")) == "funnel"


def test_most_frequent_tie_goes_to_the_value_seen_most_recently(workspace):
    """alpha and zeta both occur twice; zeta's latest occurrence is the later one, though
    alpha's first occurrence is later and alpha sorts first."""
    assert value(workspace, "name: t\nmost_frequent: {property: report_type}",
                 track("u1", "R", "2026-06-01T00:00:00Z", report_type="zeta"),
                 track("u1", "R", "2026-06-02T00:00:00Z", report_type="alpha"),
                 track("u1", "R", "2026-06-03T00:00:00Z", report_type="alpha"),
                 track("u1", "R", "2026-06-04T00:00:00Z", report_type="zeta")) == "zeta"


def test_most_frequent_tie_break_does_not_depend_on_landing_order(workspace):
    assert value(workspace, "name: t\nmost_frequent: {property: report_type}",
                 track("u1", "R", "2026-06-04T00:00:00Z", report_type="funnel"),
                 track("u1", "R", "2026-06-01T00:00:00Z", report_type="funnel"),
                 track("u1", "R", "2026-06-03T00:00:00Z", report_type="cohort"),
                 track("u1", "R", "2026-06-02T00:00:00Z", report_type="cohort")) == "funnel"


def test_most_frequent_skips_nulls(workspace):
    assert value(workspace, "name: t\nmost_frequent: {property: report_type}",
                 track("u1", "R", "2026-06-01T00:00:00Z"),
                 track("u1", "R", "2026-06-02T00:00:00Z"),
                 track("u1", "R", "2026-06-03T00:00:00Z", report_type=None),
                 track("u1", "R", "2026-06-04T00:00:00Z", report_type="cohort")) == "cohort"


def test_most_frequent_honours_its_window(workspace):
    assert value(workspace, "name: t\nmost_frequent: {property: report_type, window: 30d}",
                 track("u1", "R", "2026-04-01T00:00:00Z", report_type="funnel"),
                 track("u1", "R", "2026-04-02T00:00:00Z", report_type="funnel"),
                 track("u1", "R", "2026-06-20T00:00:00Z", report_type="cohort")) == "cohort"


def test_two_most_frequent_traits_do_not_mix(workspace):
    ws = workspace("""
        traits:
          - name: top_report
            most_frequent: {event: Report Generated, property: kind}
          - name: top_export
            most_frequent: {event: Exported, property: kind}
    """)
    ws.land(
        track("u1", "Report Generated", "2026-06-01T00:00:00Z", kind="funnel"),
        track("u1", "Exported", "2026-06-02T00:00:00Z", kind="csv"),
        track("u1", "Exported", "2026-06-03T00:00:00Z", kind="csv"),
        track("u2", "Exported", "2026-06-03T00:00:00Z", kind="pdf"),
    )
    ws.run()
    traits = ws.traits()
    assert (traits["u1"]["top_report"], traits["u1"]["top_export"]) == ("funnel", "csv")
    assert (traits["u2"]["top_report"], traits["u2"]["top_export"]) == (None, "pdf")


# ---------------------------------------------------------------- unique / count_distinct


def test_unique_is_sorted_by_code_point_and_distinct(workspace):
    assert value(workspace, "name: t\nunique: {property: browser}",
                 track("u1", "V", "2026-06-01T00:00:00Z", browser="safari"),
                 track("u1", "V", "2026-06-02T00:00:00Z", browser="Chrome"),
                 track("u1", "V", "2026-06-03T00:00:00Z", browser="safari"),
                 track("u1", "V", "2026-06-04T00:00:00Z", browser="Brave"),
                 track("u1", "V", "2026-06-05T00:00:00Z", browser="arc")) == ["Brave", "Chrome", "arc", "safari"]


def test_unique_skips_nulls(workspace):
    assert value(workspace, "name: t\nunique: {property: browser}",
                 track("u1", "V", "2026-06-01T00:00:00Z"),
                 track("u1", "V", "2026-06-02T00:00:00Z", browser=None),
                 track("u1", "V", "2026-06-03T00:00:00Z", browser="arc")) == ["arc"]


def test_unique_keeps_the_first_limit_values_in_sort_order(workspace):
    assert value(workspace, "name: t\nunique: {property: tag, limit: 2}",
                 track("u1", "V", "2026-06-01T00:00:00Z", tag="d"),
                 track("u1", "V", "2026-06-02T00:00:00Z", tag="a"),
                 track("u1", "V", "2026-06-03T00:00:00Z", tag="c"),
                 track("u1", "V", "2026-06-04T00:00:00Z", tag="B"),
                 track("u1", "V", "2026-06-05T00:00:00Z", tag="a")) == ["B", "a"]


def test_unique_limit_defaults_to_100(workspace):
    events = [track("u1", "V", f"2026-06-01T00:{i // 60:02d}:{i % 60:02d}Z", n=f"v{i:03d}") for i in range(120)]
    result = value(workspace, "name: t\nunique: {property: n}", *events)
    assert result == [f"v{i:03d}" for i in range(100)]


def test_unique_honours_event_and_where(workspace):
    assert value(workspace, "name: t\nunique: {event: [V, W], property: tag, where: \"properties.score >= 5\"}",
                 track("u1", "V", "2026-06-01T00:00:00Z", tag="x", score=5),
                 track("u1", "W", "2026-06-02T00:00:00Z", tag="y", score="7"),
                 track("u1", "V", "2026-06-03T00:00:00Z", tag="z", score=4),
                 track("u1", "Q", "2026-06-04T00:00:00Z", tag="q", score=9)) == ["x", "y"]


def test_count_distinct_counts_distinct_non_null_values(workspace):
    assert value(workspace, "name: t\ncount_distinct: {property: browser}",
                 track("u1", "V", "2026-06-01T00:00:00Z", browser="arc"),
                 track("u1", "V", "2026-06-02T00:00:00Z", browser="arc"),
                 track("u1", "V", "2026-06-03T00:00:00Z", browser="Arc"),
                 track("u1", "V", "2026-06-04T00:00:00Z", browser=None),
                 track("u1", "V", "2026-06-05T00:00:00Z")) == 2


def test_count_distinct_with_window(workspace):
    assert value(workspace, "name: t\ncount_distinct: {property: browser, window: 1w}",
                 track("u1", "V", "2026-06-01T00:00:00Z", browser="arc"),
                 track("u1", "V", "2026-06-25T00:00:00Z", browser="safari"),
                 track("u1", "V", "2026-06-26T00:00:00Z", browser="safari")) == 1


# ---------------------------------------------------------------- days_active


def test_days_active_counts_distinct_utc_days(workspace):
    assert value(workspace, "name: t\ndays_active: {event: '*'}",
                 track("u1", "A", "2026-06-01T00:00:00Z"),
                 track("u1", "A", "2026-06-01T23:59:59Z"),
                 page("u1", "Home", "2026-06-02T00:00:00Z"),
                 track("u1", "A", "2026-06-05T12:00:00Z")) == 3


def test_days_active_uses_utc_not_the_senders_offset(workspace):
    """23:30 and 01:30 local at +02:00 on 2 June are 21:30 and 23:30 UTC on 1 June: one UTC day."""
    assert value(workspace, "name: t\ndays_active: {}",
                 track("u1", "A", "2026-06-01T23:30:00+02:00"),
                 track("u1", "A", "2026-06-02T01:30:00+02:00")) == 1


def test_days_active_honours_event_and_window(workspace):
    assert value(workspace, "name: t\ndays_active: {event: A, window: 30d}",
                 track("u1", "A", "2026-05-01T00:00:00Z"),
                 track("u1", "A", "2026-06-10T00:00:00Z"),
                 track("u1", "B", "2026-06-11T00:00:00Z"),
                 track("u1", "A", "2026-06-12T00:00:00Z")) == 2


# ---------------------------------------------------------------- defaults


ALL_EVENT_KINDS = """
traits:
  - name: n_count
    count: {event: A}
  - name: n_days_active
    days_active: {event: A}
  - name: n_count_distinct
    count_distinct: {event: A, property: x}
  - name: v_sum
    sum: {event: A, property: x}
  - name: v_avg
    avg: {event: A, property: x}
  - name: v_min
    min: {event: A, property: x}
  - name: v_max
    max: {event: A, property: x}
  - name: v_first
    first: {event: A, property: x}
  - name: v_last
    last: {event: A, property: x}
  - name: v_first_seen
    first_seen: {event: A}
  - name: v_last_seen
    last_seen: {event: A}
  - name: v_most_frequent
    most_frequent: {event: A, property: x}
  - name: v_unique
    unique: {event: A, property: x}
  - name: v_trait
    trait: {trait: missing_key}
  - name: v_sql
    sql: {sql: "max(properties.x)"}
"""


def _defaults_row(workspace, *messages) -> dict:
    ws = workspace(ALL_EVENT_KINDS)
    ws.land(*messages)
    ws.run()
    row = dict(ws.traits()["u1"])
    del row["profile_id"]
    return row


def _expected_defaults(row: dict) -> dict:
    return {name: (0 if name.startswith("n_") else None) for name in row}


def test_a_profile_with_only_an_identify_gets_zero_counts_and_null_values(workspace):
    row = _defaults_row(workspace, identify("u1", "2026-06-01T00:00:00Z", plan="pro"))
    assert row == _expected_defaults(row)


def test_a_profile_with_only_other_events_gets_the_same_defaults(workspace):
    row = _defaults_row(workspace, track("u1", "B", "2026-06-01T00:00:00Z", x="1"),
                        identify("u1", "2026-06-01T00:00:00Z", plan="pro"))
    expected = _expected_defaults(row)
    expected["v_sql"] = "1"  # the sql trait reads every event of the profile
    assert row == expected


def test_a_profile_whose_events_lack_the_property_gets_zero_distinct_and_null_values(workspace):
    row = _defaults_row(workspace, track("u1", "A", "2026-06-01T00:00:00Z"))
    expected = _expected_defaults(row)
    expected.update(n_count=1, n_days_active=1, v_first_seen=datetime(2026, 6, 1), v_last_seen=datetime(2026, 6, 1))
    assert row == expected


def test_counts_are_integers(workspace):
    row = _defaults_row(workspace, track("u1", "A", "2026-06-01T00:00:00Z", x="1"))
    assert all(type(row[name]) is int for name in ("n_count", "n_days_active", "n_count_distinct"))


# ---------------------------------------------------------------- windows (spec section 2)

ONE_MICROSECOND = timedelta(microseconds=1)


def _iso(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _count_in(workspace, window: str, *instants: datetime) -> int:
    return value(workspace, f"name: t\ncount: {{window: '{window}'}}",
                 *(track("u1", "A", _iso(instant)) for instant in instants),
                 track("u1", "Anchor", "2020-01-01T00:00:00Z"))  # keeps the profile present


def test_an_event_exactly_at_the_window_start_counts(workspace):
    assert _count_in(workspace, "30d", AS_OF - timedelta(days=30)) == 1


def test_an_event_a_microsecond_before_the_window_start_does_not_count(workspace):
    assert _count_in(workspace, "30d", AS_OF - timedelta(days=30) - ONE_MICROSECOND) == 0


def test_an_event_exactly_at_as_of_does_not_count(workspace):
    assert _count_in(workspace, "30d", AS_OF) == 0


def test_an_event_a_microsecond_before_as_of_counts(workspace):
    assert _count_in(workspace, "30d", AS_OF - ONE_MICROSECOND) == 1


def test_an_event_exactly_at_the_range_end_is_in_the_next_window_not_the_range(workspace):
    ws = workspace("""
        traits:
          - name: earlier
            count: {window: 60d..30d}
          - name: recent
            count: {window: 30d}
    """)
    ws.land(track("u1", "A", _iso(AS_OF - timedelta(days=30))))
    ws.run()
    row = ws.traits()["u1"]
    assert (row["earlier"], row["recent"]) == (0, 1)


def test_a_range_includes_its_start_and_excludes_its_end(workspace):
    inside = [AS_OF - timedelta(days=60), AS_OF - timedelta(days=30) - ONE_MICROSECOND, AS_OF - timedelta(days=45)]
    outside = [AS_OF - timedelta(days=60) - ONE_MICROSECOND, AS_OF - timedelta(days=30), AS_OF - timedelta(days=1)]
    assert _count_in(workspace, "60d..30d", *inside, *outside) == 3


@pytest.mark.parametrize(
    ("window", "length"),
    [
        ("90m", timedelta(minutes=90)),
        ("36h", timedelta(hours=36)),
        ("2w", timedelta(weeks=2)),
        ("1d", timedelta(days=1)),
        ("1500m", timedelta(minutes=1500)),
    ],
)
def test_window_units(workspace, window, length):
    start = AS_OF - length
    assert _count_in(workspace, window, start, start + ONE_MICROSECOND, start - ONE_MICROSECOND,
                     AS_OF - ONE_MICROSECOND, AS_OF) == 3


@pytest.mark.parametrize(
    ("window", "start", "end"),
    [
        ("3h..90m", timedelta(hours=3), timedelta(minutes=90)),
        ("2w..1w", timedelta(weeks=2), timedelta(weeks=1)),
        ("2d..36h", timedelta(days=2), timedelta(hours=36)),
    ],
)
def test_range_windows_with_mixed_units(workspace, window, start, end):
    assert _count_in(workspace, window,
                     AS_OF - start, AS_OF - end - ONE_MICROSECOND,  # in
                     AS_OF - start - ONE_MICROSECOND, AS_OF - end) == 2  # out


def test_as_of_keeps_microsecond_precision(workspace):
    as_of = AS_OF + timedelta(microseconds=500)
    assert value(workspace, "name: t\ncount: {}",
                 track("u1", "A", _iso(as_of - ONE_MICROSECOND)),
                 track("u1", "A", _iso(as_of)),
                 as_of=as_of) == 1


def test_no_window_means_all_history_before_as_of(workspace):
    assert value(workspace, "name: t\ncount: {}",
                 track("u1", "A", "2001-01-01T00:00:00Z"),
                 track("u1", "A", _iso(AS_OF - ONE_MICROSECOND)),
                 track("u1", "A", _iso(AS_OF)),
                 track("u1", "A", "2030-01-01T00:00:00Z")) == 2


def test_windows_move_with_as_of(workspace):
    assert value(workspace, "name: t\ncount: {window: 7d}",
                 track("u1", "A", "2026-03-01T00:00:00Z"),
                 track("u1", "A", "2026-03-05T00:00:00Z"),
                 track("u1", "A", "2026-06-29T00:00:00Z"),
                 as_of=datetime.fromisoformat("2026-03-07T00:00:00+00:00")) == 2


def test_windows_apply_to_every_event_kind(workspace):
    ws = workspace("""
        traits:
          - name: s
            sum: {property: x, window: 30d}
          - name: f
            first: {property: x, window: 30d}
          - name: fs
            first_seen: {window: 30d}
          - name: u
            unique: {property: x, window: 30d}
          - name: d
            days_active: {window: 30d}
    """)
    ws.land(track("u1", "A", "2026-05-30T00:00:00Z", x=100),
            track("u1", "A", "2026-06-10T00:00:00Z", x=1),
            track("u1", "A", "2026-06-11T00:00:00Z", x=2))
    ws.run()
    row = ws.traits()["u1"]
    assert (row["s"], row["f"], row["fs"], row["u"], row["d"]) == (3.0, "1", datetime(2026, 6, 10), ["1", "2"], 2)


def test_audience_events_function_uses_the_same_half_open_windows(workspace):
    """Spec section 5: events('*', '60d..30d') counts like a '60d..30d' count trait."""
    ws = workspace("""
        traits:
          - name: any_event
            count: {}
        audiences:
          - name: lapsed
            where: events('*', '60d..30d') > 0 AND events('*', '30d') = 0
    """)
    ws.land(
        track("lapsed_user", "A", _iso(AS_OF - timedelta(days=60))),
        track("boundary_user", "A", _iso(AS_OF - timedelta(days=30))),  # in '30d', not in '60d..30d'
        track("future_user", "A", _iso(AS_OF - timedelta(days=45))),
        track("future_user", "A", _iso(AS_OF)),  # at as-of: ignored, so future_user is lapsed
    )
    ws.run()
    assert ws.members("lapsed") == {"lapsed_user", "future_user"}


# ---------------------------------------------------------------- as-of


def test_messages_at_or_after_as_of_are_ignored_by_every_kind(workspace):
    ws = workspace("""
        traits:
          - name: c
            count: {}
          - name: l
            last: {property: x}
          - name: ls
            last_seen: {}
          - name: mf
            most_frequent: {property: x}
          - name: plan
            trait: {trait: plan}
          - name: q
            sql: {sql: "max(properties.x)"}
    """)
    ws.land(
        identify("u1", "2026-06-01T00:00:00Z", plan="free"),
        track("u1", "A", "2026-06-01T00:00:00Z", x="before"),
        identify("u1", _iso(AS_OF), plan="pro"),
        track("u1", "A", _iso(AS_OF), x="after"),
        page("u1", "Home", "2026-07-01T00:00:00Z", x="after"),
        screen("u1", "Home", "2026-07-02T00:00:00Z", x="after"),
        identify("u1", "2026-07-03T00:00:00Z", plan="enterprise"),
    )
    ws.run()
    row = ws.traits()["u1"]
    assert (row["c"], row["l"], row["ls"], row["mf"], row["plan"], row["q"]) == (
        1, "before", datetime(2026, 6, 1), "before", "free", "before")


def test_a_profile_seen_only_after_as_of_does_not_exist_yet(workspace):
    traits = one_trait(workspace, "name: t\ncount: {}",
                       track("u1", "A", "2026-06-01T00:00:00Z"),
                       track("u2", "A", "2026-07-01T00:00:00Z"),
                       identify("u3", _iso(AS_OF), plan="pro"))
    assert set(traits) == {"u1"}


def test_a_past_as_of_reproduces_the_earlier_run(workspace):
    ws = workspace("""
        traits:
          - name: c30
            count: {window: 30d}
          - name: revenue
            sum: {property: amount}
          - name: last_plan
            last: {property: plan}
          - name: top
            most_frequent: {property: plan}
          - name: tags
            unique: {property: plan}
          - name: plan
            trait: {trait: plan}
          - name: seen
            last_seen: {}
          - name: per_event
            expression: {sql: "revenue / c30"}
    """)
    first_as_of = datetime.fromisoformat("2026-06-15T00:00:00+00:00")
    ws.land(
        identify("u1", "2026-06-01T00:00:00Z", plan="free"),
        track("u1", "Paid", "2026-06-02T00:00:00Z", amount=10, plan="free"),
        track("u2", "Paid", "2026-06-03T00:00:00Z", amount=5, plan="pro"),
    )
    ws.run(as_of=first_as_of)
    before = ws.traits()
    ws.land(
        identify("u1", "2026-06-20T00:00:00Z", plan="pro"),
        track("u1", "Paid", "2026-06-20T00:00:00Z", amount=99, plan="pro"),
        track("u1", "Paid", "2026-06-21T00:00:00Z", amount=1, plan="pro"),
        track("u3", "Paid", "2026-06-22T00:00:00Z", amount=7, plan="pro"),
        track("u2", "Paid", _iso(first_as_of), amount=1000, plan="enterprise"),
    )
    ws.run(as_of=AS_OF)
    later = ws.traits()
    assert later != before  # the later run did see the new data
    ws.run(as_of=first_as_of)
    assert ws.traits() == before


# ---------------------------------------------------------------- trait (identify)


def test_trait_takes_the_latest_identify_value(workspace):
    assert value(workspace, "name: t\ntrait: {trait: plan}",
                 identify("u1", "2026-06-03T00:00:00Z", plan="pro"),
                 identify("u1", "2026-06-01T00:00:00Z", plan="free"),  # landed later, happened earlier
                 identify("u1", "2026-06-02T00:00:00Z", plan="basic")) == "pro"


def test_a_later_identify_without_the_key_does_not_erase_it(workspace):
    assert value(workspace, "name: t\ntrait: {trait: plan}",
                 identify("u1", "2026-06-01T00:00:00Z", plan="pro"),
                 identify("u1", "2026-06-02T00:00:00Z", email="a@example.com")) == "pro"


def test_a_later_identify_with_a_null_value_does_not_erase_it(workspace):
    assert value(workspace, "name: t\ntrait: {trait: plan}",
                 identify("u1", "2026-06-01T00:00:00Z", plan="pro"),
                 identify("u1", "2026-06-02T00:00:00Z", plan=None)) == "pro"


def test_trait_ignores_properties_of_track_calls(workspace):
    assert value(workspace, "name: t\ntrait: {trait: plan}",
                 identify("u1", "2026-06-01T00:00:00Z", plan="pro"),
                 track("u1", "Plan Viewed", "2026-06-02T00:00:00Z", plan="enterprise")) == "pro"


def test_trait_without_any_identify_is_null(workspace):
    assert value(workspace, "name: t\ntrait: {trait: plan}",
                 track("u1", "A", "2026-06-01T00:00:00Z", plan="pro")) is None


def test_trait_type_number_casts_json_numbers_and_numeric_strings(workspace):
    traits = one_trait(workspace, "name: t\ntrait: {trait: seats, type: number}",
                       identify("u1", "2026-06-01T00:00:00Z", seats=5),
                       identify("u2", "2026-06-01T00:00:00Z", seats="12.5"),
                       identify("u3", "2026-06-01T00:00:00Z", seats="many"))
    assert {profile: row["t"] for profile, row in traits.items()} == {"u1": 5.0, "u2": 12.5, "u3": None}


def test_trait_type_boolean_casts_json_booleans(workspace):
    traits = one_trait(workspace, "name: t\ntrait: {trait: verified, type: boolean}",
                       identify("u1", "2026-06-01T00:00:00Z", verified=True),
                       identify("u2", "2026-06-01T00:00:00Z", verified=False),
                       identify("u3", "2026-06-01T00:00:00Z", verified=True),
                       identify("u3", "2026-06-02T00:00:00Z", verified=False))
    assert {profile: row["t"] for profile, row in traits.items()} == {"u1": True, "u2": False, "u3": False}


def test_a_later_false_is_a_value_not_a_missing_key(workspace):
    assert value(workspace, "name: t\ntrait: {trait: verified, type: boolean}",
                 identify("u1", "2026-06-01T00:00:00Z", verified=True),
                 identify("u1", "2026-06-02T00:00:00Z", verified=False),
                 identify("u1", "2026-06-03T00:00:00Z", name="Ann")) is False


def test_trait_type_can_be_given_on_the_trait(workspace):
    assert value(workspace, "name: t\ntype: number\ntrait: {trait: seats}",
                 identify("u1", "2026-06-01T00:00:00Z", seats="7")) == 7.0


def test_trait_reads_a_nested_key(workspace):
    assert value(workspace, "name: t\ntrait: {trait: company.name}",
                 identify("u1", "2026-06-01T00:00:00Z", company={"name": "Acme"}),
                 identify("u1", "2026-06-02T00:00:00Z", company={"size": 10})) == "Acme"


def test_trait_type_timestamp_is_a_utc_instant(workspace):
    """Timestamps are UTC everywhere (section 1): an offset in the value is honoured."""
    traits = one_trait(workspace, "name: t\ntrait: {trait: trial_ends, type: timestamp}",
                       identify("u1", "2026-06-01T00:00:00Z", trial_ends="2026-07-01T10:00:00Z"),
                       identify("u2", "2026-06-01T00:00:00Z", trial_ends="2026-07-01T10:00:00+02:00"))
    assert {profile: row["t"] for profile, row in traits.items()} == {
        "u1": datetime(2026, 7, 1, 10, 0), "u2": datetime(2026, 7, 1, 8, 0)}


# ---------------------------------------------------------------- sql


def test_sql_trait_aggregates_over_the_profiles_events_only(workspace):
    """An identify in the profile is not one of the rows count(*) sees."""
    assert value(workspace, "name: t\nsql: {sql: \"sum(properties.amount) / count(*)\"}",
                 identify("u1", "2026-06-01T00:00:00Z", plan="pro"),
                 track("u1", "Paid", "2026-06-02T00:00:00Z", amount=10),
                 track("u1", "Paid", "2026-06-03T00:00:00Z", amount="20"),
                 page("u1", "Home", "2026-06-04T00:00:00Z")) == pytest.approx(10.0)


def test_a_single_aggregate_sql_trait_ignores_identify_group_and_alias(workspace):
    assert value(workspace, "name: t\nsql: {sql: \"count(*)\"}",
                 track("u1", "A", "2026-06-01T00:00:00Z"),
                 identify("u1", "2026-06-01T12:00:00Z", plan="pro"),
                 message("group", "u1", "2026-06-02T00:00:00Z", groupId="g1", traits={"name": "Acme"}),
                 message("alias", "u1", "2026-06-03T00:00:00Z", previousId="anon-1")) == 1


def test_a_sql_trait_over_timestamp_sees_only_events(workspace):
    assert value(workspace, "name: t\nsql: {sql: \"max(timestamp)\"}",
                 track("u1", "A", "2026-06-01T00:00:00Z"),
                 identify("u1", "2026-06-10T00:00:00Z", plan="pro")) == datetime(2026, 6, 1)


def test_sql_trait_with_conditional_aggregates(workspace):
    assert value(workspace,
                 "name: t\nsql: {sql: \"sum(CASE WHEN properties.amount > 10 THEN 1 ELSE 0 END) + count(DISTINCT event)\"}",
                 identify("u1", "2026-06-01T00:00:00Z", amount=50),
                 track("u1", "Paid", "2026-06-02T00:00:00Z", amount=50),
                 track("u1", "Paid", "2026-06-03T00:00:00Z", amount=5),
                 page("u1", "Home", "2026-06-04T00:00:00Z")) == 3


def test_sql_trait_may_use_an_aggregate_filter_clause(workspace):
    """`count(*) FILTER (WHERE ...)` is an aggregate SQL expression in DuckDB, the dialect of record."""
    assert value(workspace, "name: t\nsql: {sql: \"count(*) FILTER (WHERE properties.amount > 10)\"}",
                 identify("u1", "2026-06-01T00:00:00Z", amount=50),
                 track("u1", "Paid", "2026-06-02T00:00:00Z", amount=50),
                 track("u1", "Paid", "2026-06-03T00:00:00Z", amount=5)) == 1


def test_sql_trait_division_by_zero_is_null(workspace):
    assert value(workspace,
                 "name: t\nsql: {sql: \"sum(properties.amount) / sum(CASE WHEN event = 'Nope' THEN 1 ELSE 0 END)\"}",
                 track("u1", "Paid", "2026-06-02T00:00:00Z", amount=10)) is None


def test_sql_trait_division_is_true_division(workspace):
    assert value(workspace, "name: t\nsql: {sql: \"sum(CASE WHEN event = 'A' THEN 1 ELSE 0 END) / count(*)\"}",
                 track("u1", "A", "2026-06-01T00:00:00Z"),
                 track("u1", "B", "2026-06-02T00:00:00Z")) == pytest.approx(0.5)


# ---------------------------------------------------------------- expression


EXPRESSION_PROJECT = """
traits:
  - name: lifetime_revenue
    sum: {event: Paid, property: revenue}
  - name: days
    days_active: {event: '*', window: 30d}
  - name: paid_count
    count: {event: Paid}
  - name: refund_count
    count: {event: Refunded}
  - name: revenue_per_active_day
    expression: {sql: "lifetime_revenue / NULLIF(days, 0)"}
  - name: paid_per_refund
    expression: {sql: "paid_count / refund_count"}
  - name: doubled
    expression: {sql: "revenue_per_active_day * 2"}
"""


def _expressions(workspace, *messages) -> dict:
    ws = workspace(EXPRESSION_PROJECT)
    ws.land(*messages)
    ws.run()
    return ws.traits()["u1"]


def test_expression_over_other_traits(workspace):
    row = _expressions(workspace,
                       track("u1", "Paid", "2026-06-01T00:00:00Z", revenue=30),
                       track("u1", "Paid", "2026-06-02T00:00:00Z", revenue=10),
                       track("u1", "Refunded", "2026-06-02T00:00:00Z"))
    assert row["revenue_per_active_day"] == pytest.approx(20.0)
    assert row["paid_per_refund"] == pytest.approx(2.0)


def test_expression_with_nullif_zero_is_null(workspace):
    row = _expressions(workspace, track("u1", "Paid", "2026-04-01T00:00:00Z", revenue=30))
    assert row["days"] == 0
    assert row["revenue_per_active_day"] is None


def test_expression_dividing_by_zero_is_null_not_infinity(workspace):
    row = _expressions(workspace, track("u1", "Paid", "2026-06-01T00:00:00Z", revenue=30))
    assert row["refund_count"] == 0
    assert row["paid_per_refund"] is None


def test_expression_division_is_true_division(workspace):
    row = _expressions(workspace,
                       track("u1", "Paid", "2026-06-01T00:00:00Z", revenue=1),
                       track("u1", "Refunded", "2026-06-01T00:00:00Z"),
                       track("u1", "Refunded", "2026-06-02T00:00:00Z"))
    assert row["paid_per_refund"] == pytest.approx(0.5)


def test_expression_over_another_expression(workspace):
    row = _expressions(workspace,
                       track("u1", "Paid", "2026-06-01T00:00:00Z", revenue=30),
                       track("u1", "Paid", "2026-06-02T00:00:00Z", revenue=10))
    assert row["doubled"] == pytest.approx(40.0)


def test_expression_that_is_just_another_trait_name(workspace):
    ws = workspace("""
        traits:
          - name: paid
            count: {event: Paid}
          - name: paid_again
            expression: {sql: "paid"}
    """)
    ws.land(track("u1", "Paid", "2026-06-01T00:00:00Z"), identify("u2", "2026-06-01T00:00:00Z"))
    ws.run()
    traits = ws.traits()
    assert (traits["u1"]["paid_again"], traits["u2"]["paid_again"]) == (1, 0)


def test_expression_sees_defaults_of_profiles_without_events(workspace):
    """paid_count and refund_count are 0 (not null) for an identify-only profile; 0/0 is null."""
    row = _expressions(workspace, identify("u1", "2026-06-01T00:00:00Z", plan="pro"))
    assert (row["paid_count"], row["refund_count"], row["paid_per_refund"], row["doubled"]) == (0, 0, None, None)


def test_expression_over_a_trait_and_a_most_frequent_trait(workspace):
    ws = workspace("""
        traits:
          - name: plan
            trait: {trait: plan}
          - name: top_plan
            most_frequent: {property: plan}
          - name: plan_matches
            expression: {sql: "coalesce(plan = top_plan, false)"}
    """)
    ws.land(identify("u1", "2026-06-01T00:00:00Z", plan="pro"),
            track("u1", "A", "2026-06-02T00:00:00Z", plan="pro"),
            identify("u2", "2026-06-01T00:00:00Z", plan="pro"),
            track("u2", "A", "2026-06-02T00:00:00Z", plan="free"))
    ws.run()
    traits = ws.traits()
    assert (traits["u1"]["plan_matches"], traits["u2"]["plan_matches"]) == (True, False)


# ---------------------------------------------------------------- landing rules traits rely on


def test_a_duplicate_message_id_counts_once_and_the_first_copy_wins(workspace):
    ws = workspace("""
        traits:
          - name: c
            count: {}
          - name: revenue
            sum: {property: amount}
    """)
    original = {"type": "track", "messageId": "dup-1", "userId": "u1", "event": "Paid",
                "properties": {"amount": 10}, "timestamp": "2026-06-01T00:00:00Z"}
    ws.land(original, {**original, "properties": {"amount": 500}})
    ws.land({**original, "properties": {"amount": 999}, "timestamp": "2026-06-02T00:00:00Z"})
    ws.run()
    row = ws.traits()["u1"]
    assert (row["c"], row["revenue"]) == (1, 10.0)


def test_a_duplicate_identify_does_not_overwrite_the_first_copy(workspace):
    original = {"type": "identify", "messageId": "dup-2", "userId": "u1",
                "traits": {"plan": "free"}, "timestamp": "2026-06-01T00:00:00Z"}
    assert value(workspace, "name: t\ntrait: {trait: plan}",
                 original, {**original, "traits": {"plan": "pro"}, "timestamp": "2026-06-05T00:00:00Z"}) == "free"


def test_clock_skew_is_corrected_before_windows_apply(workspace):
    """The device clock is a month behind: it says 20 May, but the message was sent 5 s after
    it happened and received on 20 June, so it happened at 20 June 12:00."""
    ws = workspace("""
        traits:
          - name: recent
            count: {window: 30d}
          - name: seen
            first_seen: {}
    """)
    ws.land(message("track", "u1", "2026-05-20T12:00:00Z", event="A",
                    sentAt="2026-05-20T12:00:05Z", receivedAt="2026-06-20T12:00:05Z"))
    ws.run()
    row = ws.traits()["u1"]
    assert (row["recent"], row["seen"]) == (1, datetime(2026, 6, 20, 12, 0))


def test_clock_skew_correction_can_move_an_event_past_as_of(workspace):
    """A device clock running ahead is not trusted either: corrected, the event is after as-of."""
    assert value(workspace, "name: t\ncount: {}",
                 track("u1", "Anchor", "2026-01-01T00:00:00Z"),
                 message("track", "u1", "2026-06-29T00:00:00Z", event="A",
                         sentAt="2026-06-29T00:00:01Z", receivedAt="2026-07-01T00:00:01Z")) == 1


def test_without_sent_at_the_timestamp_is_taken_as_given(workspace):
    assert value(workspace, "name: t\nfirst_seen: {}",
                 message("track", "u1", "2026-05-20T12:00:00Z", event="A",
                         receivedAt="2026-06-20T12:00:05Z")) == datetime(2026, 5, 20, 12, 0)


def test_an_offset_in_the_timestamp_is_honoured_by_windows(workspace):
    """01:30 at +02:00 on 30 June is 23:30 UTC on 29 June: before as-of."""
    assert value(workspace, "name: t\ncount: {window: 1h}",
                 track("u1", "A", "2026-06-30T01:30:00+02:00"),
                 track("u1", "A", "2026-06-30T00:30:00-02:00")) == 1  # 02:30 UTC: after as-of
