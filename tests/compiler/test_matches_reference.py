"""Property: for random small event sets, `cdp run` on DuckDB computes the same profiles,
traits, audience members and splits as the plain-Python reference (tests/reference.py).

One fixed project covers every trait kind; the event sets are drawn around AS_OF on a coarse
grid that hits the window boundaries exactly, with offsets in the timestamps, clock skew,
messages after as-of and duplicate messageIds with different content.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cdp_warehouse.specs import load_project
from tests import reference as ref
from tests.conftest import AS_OF, Workspace, write_project
from tests.reference import (
    AnyOf,
    Audience,
    Trait,
    and3,
    cmp3,
    coalesce,
    div,
    not3,
    number_of,
    or3,
    text_of,
)

CDP_YAML = """\
name: reference
warehouse:
  type: duckdb
  path: ":memory:"
"""

PROJECT_YAML = """\
traits:
  - name: n_all
    count: {event: "*"}
  - name: n_purchase
    count: {event: Purchase}
  - name: n_list
    count: {event: [Purchase, Signup]}
  - name: n_kind_a
    count: {where: "properties.kind = 'a'"}
  - name: n_big_30d
    count: {event: Purchase, where: "properties.amount >= 2", window: 30d}
  - name: n_2h
    count: {event: "*", window: 2h}
  - name: n_old
    count: {event: "*", window: 60d..30d}
  - name: n_week
    count: {event: "*", window: 1w..90m}
  - name: n_kind_one
    count: {where: "properties.kind = 1"}
  - name: amt_sum
    sum: {event: Purchase, property: amount}
  - name: amt_avg_30d
    avg: {property: amount, window: 30d}
  - name: amt_min
    min: {property: amount}
  - name: amt_max_old
    max: {property: amount, window: 60d..30d}
  - name: kind_first
    first: {property: kind}
  - name: kind_last_track
    last: {property: kind, where: "type = 'track'"}
  - name: amt_last
    last: {property: amount, type: number}
  - name: seen_first
    first_seen: {event: "*"}
  - name: seen_last_purchase_30d
    last_seen: {event: Purchase, window: 30d}
  - name: kind_top
    most_frequent: {property: kind}
  - name: kind_top_old
    most_frequent: {property: kind, window: 60d..30d}
  - name: kind_unique
    unique: {property: kind, limit: 2}
  - name: kind_distinct
    count_distinct: {property: kind}
  - name: days_all
    days_active: {event: "*"}
  - name: days_30d
    days_active: {event: "*", window: 30d}
  - name: plan
    trait: {trait: plan}
  - name: score
    trait: {trait: score, type: number}
  - name: sql_count
    sql: {sql: "count(*)"}
  - name: sql_max_amount
    sql: {sql: "max(properties.amount)"}
  - name: sql_sum_double
    sql: {sql: "sum(properties.amount * 2)"}
  - name: revenue_per_purchase
    expression: {sql: "amt_sum / n_purchase"}
  - name: events_per_day
    expression: {sql: "n_all / days_all"}
  - name: amt_ratio
    expression: {sql: "amt_sum / amt_min"}
  - name: double_rate
    expression: {sql: "events_per_day * 2"}
  - name: sql_count_a
    sql: {sql: "count(*) FILTER (WHERE properties.kind = 'a')"}
  - name: sql_mean
    sql: {sql: "sum(properties.amount) / count(*)"}
  - name: sql_distinct_events
    sql: {sql: "count(DISTINCT event)"}

audiences:
  - name: buyers
    where: "events('Purchase', '30d') > 0"
  - name: lapsed
    where: >
      events_where('*', '60d..30d', 'properties.amount >= 2') > 0
      AND events('*', '30d') = 0
      AND plan <> 'free'
  - name: not_free
    where: "NOT (plan = 'free')"
  - name: engaged
    where: "in_audience('buyers') OR coalesce(plan, '') = 'pro'"
    exclude: [lapsed]
    splits: {treatment: 70, holdout: 30}
  - name: quiet
    where: "NOT in_audience('buyers') AND (amt_avg_30d > 1 OR n_all >= 3)"
    splits: {a: 34, b: 33, c: 33}
  - name: recent
    where: "events_where('Signup', '2h', 'properties.kind <> ''a''') >= 1 OR events('*', '2h') >= 2"
  - name: scored
    where: "score >= 5 OR events_per_day > 1"
  - name: known_silent
    where: "user_id IS NOT NULL AND events('*') = 0"
  - name: mostly_buying
    where: "n_purchase / n_all >= 0.5"
  - name: follow_up
    where: "in_audience('engaged') AND n_all >= 1"
    exclude: [recent]
  - name: one_instant
    where: "first_seen = last_seen OR NOT in_audience('engaged')"
"""


def _amount(row: ref.Row) -> Any:
    return row.properties.get("amount")


def _kind(row: ref.Row) -> Any:
    return row.properties.get("kind")


def _sum(values: list[float]) -> float | None:
    return math.fsum(values) if values else None


TRAITS = [
    Trait("n_all", "count"),
    Trait("n_purchase", "count", event="Purchase"),
    Trait("n_list", "count", event=["Purchase", "Signup"]),
    Trait("n_kind_a", "count", where=lambda r: cmp3(text_of(_kind(r)), "=", "a")),
    Trait("n_big_30d", "count", event="Purchase", where=lambda r: cmp3(number_of(_amount(r)), ">=", 2), window="30d"),
    Trait("n_2h", "count", window="2h"),
    Trait("n_old", "count", window="60d..30d"),
    Trait("n_week", "count", window="1w..90m"),
    Trait("n_kind_one", "count", where=lambda r: cmp3(number_of(_kind(r)), "=", 1)),
    Trait("amt_sum", "sum", event="Purchase", property="amount"),
    Trait("amt_avg_30d", "avg", property="amount", window="30d"),
    Trait("amt_min", "min", property="amount"),
    Trait("amt_max_old", "max", property="amount", window="60d..30d"),
    Trait("kind_first", "first", property="kind"),
    Trait("kind_last_track", "last", property="kind", where=lambda r: cmp3(r.type, "=", "track")),
    Trait("amt_last", "last", property="amount", type="number"),
    Trait("seen_first", "first_seen"),
    Trait("seen_last_purchase_30d", "last_seen", event="Purchase", window="30d"),
    Trait("kind_top", "most_frequent", property="kind"),
    Trait("kind_top_old", "most_frequent", property="kind", window="60d..30d"),
    Trait("kind_unique", "unique", property="kind", limit=2),
    Trait("kind_distinct", "count_distinct", property="kind"),
    Trait("days_all", "days_active"),
    Trait("days_30d", "days_active", window="30d"),
    Trait("plan", "trait", trait="plan"),
    Trait("score", "trait", trait="score", type="number"),
    # sql: count(*) over the profile's events; max() of a JSON path is text (not compared with a
    # number nor in arithmetic, spec §4); `* 2` is arithmetic, so the path is read as a number.
    Trait("sql_count", "sql", sql=lambda events: len(events)),
    Trait("sql_max_amount", "sql",
          sql=lambda events: max((t for r in events if (t := text_of(_amount(r))) is not None), default=None)),
    Trait("sql_sum_double", "sql",
          sql=lambda events: _sum([2 * n for r in events if (n := number_of(_amount(r))) is not None])),
    Trait("revenue_per_purchase", "expression", sql=lambda v: div(v["amt_sum"], v["n_purchase"])),
    Trait("events_per_day", "expression", sql=lambda v: div(v["n_all"], v["days_all"])),
    Trait("amt_ratio", "expression", sql=lambda v: div(v["amt_sum"], v["amt_min"])),
    Trait("double_rate", "expression",
          sql=lambda v: None if v["events_per_day"] is None else v["events_per_day"] * 2),
    Trait("sql_count_a", "sql", sql=lambda events: sum(text_of(_kind(r)) == "a" for r in events)),
    Trait("sql_mean", "sql", sql=lambda events: div(
        _sum([n for r in events if (n := number_of(_amount(r))) is not None]), len(events))),
    Trait("sql_distinct_events", "sql", sql=lambda events: len({r.event for r in events} - {None})),
]

AUDIENCES = [
    Audience("buyers", lambda c: c.events("Purchase", "30d") > 0),
    Audience("lapsed", lambda c: and3(
        c.events("*", "60d..30d", lambda r: cmp3(number_of(_amount(r)), ">=", 2)) > 0,
        c.events("*", "30d") == 0,
        cmp3(c["plan"], "<>", "free"),
    )),
    Audience("not_free", lambda c: not3(cmp3(c["plan"], "=", "free"))),
    Audience("engaged", lambda c: or3(c.in_audience("buyers"), coalesce(c["plan"], "") == "pro"),
             exclude=("lapsed",), splits={"treatment": 70, "holdout": 30}),
    Audience("quiet", lambda c: and3(not3(c.in_audience("buyers")),
                                     or3(cmp3(c["amt_avg_30d"], ">", 1), c["n_all"] >= 3)),
             splits={"a": 34, "b": 33, "c": 33}),
    Audience("recent", lambda c: or3(
        c.events("Signup", "2h", lambda r: cmp3(text_of(_kind(r)), "<>", "a")) >= 1,
        c.events("*", "2h") >= 2,
    )),
    Audience("scored", lambda c: or3(cmp3(c["score"], ">=", 5), cmp3(c["events_per_day"], ">", 1))),
    Audience("known_silent", lambda c: and3(c["user_id"] is not None, c.events("*") == 0)),
    Audience("mostly_buying", lambda c: cmp3(div(c["n_purchase"], c["n_all"]), ">=", 0.5)),
    Audience("follow_up", lambda c: and3(c.in_audience("engaged"), c["n_all"] >= 1), exclude=("recent",)),
    Audience("one_instant", lambda c: or3(c["first_seen"] == c["last_seen"], not3(c.in_audience("engaged")))),
]


# ------------------------------------------------------------------ event sets

USERS = ["u1", "u2", "u3"]
ANONYMOUS = ["a1", "a2"]
# Offsets from AS_OF: both window edges (-60d, -30d, -2h) exactly and one minute either side,
# UTC midnight crossings, as-of itself and after it; or any point of a coarse day×minute grid.
EDGES = [timedelta(days=d, minutes=m) for d in (0, -30, -60) for m in (0, -1, 1)]
EDGES += [timedelta(hours=-2, minutes=m) for m in (0, -1, 1)] + [timedelta(minutes=-30), timedelta(days=-1)]
EDGES += [timedelta(minutes=-90 + m) for m in (0, -1, 1)] + [timedelta(weeks=-1, minutes=m) for m in (0, -1, 1)]
EDGES += [timedelta(microseconds=-1), timedelta(days=-30, microseconds=-1), timedelta(days=-60, microseconds=-1)]
DAYS = [-1, -30, -60, 0, -29, -31, -59, -61, 1, -45, -90]
MINUTES = [0, -1, 1, -120, -119, -121, 30, -600]
OFFSETS = [UTC, timezone(timedelta(hours=2)), timezone(-timedelta(hours=5, minutes=30))]
offsets = st.one_of(
    st.sampled_from(EDGES),
    st.builds(lambda d, m: timedelta(days=d, minutes=m), st.sampled_from(DAYS), st.sampled_from(MINUTES)),
)
# as-of: UTC midnight, or mid-afternoon given with a +02:00 offset (so day boundaries and
# window edges no longer coincide).
AS_OFS = [AS_OF, datetime(2026, 6, 30, 15, 30, tzinfo=timezone(timedelta(hours=2)))]

amounts = st.one_of(
    st.integers(-3, 12),
    st.sampled_from([0.5, 2.5, -0.25, 2.0, 10.75]),
    st.sampled_from(["2", "2.5", "-1", "10.75", "0", "3.0", "12", "007"]),  # numeric strings
    st.sampled_from(["abc", "", "2a", "true"]),  # not numbers
    st.booleans(),
    st.none(),
)
kinds = st.one_of(
    st.sampled_from(["a", "b", "B", "a", "ab", "é", "", "1"]),
    st.integers(0, 2),
    st.just(1.5),
    st.booleans(),
    st.none(),
)
plans = st.one_of(st.sampled_from(["free", "pro", "team"]), st.none(), st.just(1), st.booleans())
scores = st.one_of(st.integers(0, 9), st.sampled_from(["7", "x", "4.5"]), st.just(2.5), st.none())
properties = st.fixed_dictionaries({}, optional={"amount": amounts, "kind": kinds})
identify_traits = st.fixed_dictionaries({}, optional={"plan": plans, "score": scores})


@st.composite
def identities(draw) -> dict:
    user, anonymous = draw(st.sampled_from([(True, False), (False, True), (True, True)]))
    return {"userId": draw(st.sampled_from(USERS)) if user else None,
            "anonymousId": draw(st.sampled_from(ANONYMOUS)) if anonymous else None}


@st.composite
def message_bodies(draw, as_of: datetime) -> dict:
    kind = draw(st.sampled_from(["track", "track", "page", "identify", "track", "identify", "group", "alias", "screen"]))
    corrected = as_of + draw(offsets)
    offset = draw(st.sampled_from(OFFSETS))
    clock = draw(st.sampled_from(["exact", "skewed", "skewed", "sent_only", "received_only"]))
    skew = draw(st.sampled_from([timedelta(minutes=7), -timedelta(days=1)]))
    message: dict[str, Any] = {"type": kind}
    if clock == "exact":
        message["timestamp"] = corrected.astimezone(offset).isoformat()
    elif clock == "skewed":  # device clock off by `skew`, 3 s in flight: corrected on landing
        message["timestamp"] = (corrected + skew).astimezone(offset).isoformat()
        message["sentAt"] = (corrected + skew + timedelta(seconds=3)).isoformat()
        message["receivedAt"] = (corrected + timedelta(seconds=3)).isoformat()
    elif clock == "sent_only":  # no receivedAt: timestamp taken as given
        message["timestamp"] = corrected.astimezone(offset).isoformat()
        message["sentAt"] = (corrected + skew).isoformat()
    else:  # no timestamp: receivedAt
        message["receivedAt"] = corrected.astimezone(offset).isoformat()
    if kind == "alias":
        message["userId"] = draw(st.sampled_from(USERS))
        message["previousId"] = draw(st.sampled_from(ANONYMOUS))
        return message
    message.update(draw(identities()))
    if kind == "track":
        message["event"] = draw(st.sampled_from(["Purchase", "Signup", "View", "Purchase"]))
        message["properties"] = draw(properties)
    elif kind in ("page", "screen"):
        name = draw(st.sampled_from(["Home", "Purchase", None]))
        if name is not None:
            message["name"] = name
        message["properties"] = draw(properties)
    elif kind == "identify":
        message["traits"] = draw(identify_traits)
    else:  # group traits never feed `trait`
        message["groupId"] = "g1"
        message["traits"] = draw(identify_traits)
    return message


@st.composite
def event_sets(draw) -> tuple[list[dict], int, datetime]:
    """(messages with ids, split point between two loads, as-of); some ids repeat an earlier one."""
    as_of = draw(st.sampled_from(AS_OFS))
    size = draw(st.integers(0, 40))  # drawn first: plain st.lists stays very short
    bodies = draw(st.lists(message_bodies(as_of), min_size=size, max_size=size))
    messages = []
    for index, body in enumerate(bodies):
        reuse = draw(st.one_of(st.none(), st.integers(0, 39))) if index else None
        message_id = f"m{reuse}" if reuse is not None and reuse < index else f"m{index}"
        messages.append({"messageId": message_id, **body})
    return messages, draw(st.integers(0, len(messages))), as_of


# ------------------------------------------------------------------ comparison


def same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, AnyOf):
        return any(same(candidate, actual) for candidate in expected.candidates)
    if expected is None or actual is None:
        return expected is None and actual is None
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    if isinstance(expected, float) or isinstance(actual, float):
        return isinstance(actual, (int, float)) and math.isclose(expected, actual, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(expected, list):
        return isinstance(actual, list) and len(actual) == len(expected) and all(map(same, expected, actual))
    return type(expected) is type(actual) and expected == actual


def resolve(expected: Any, actual: Any) -> Any:
    """The actual value where the reference allowed a choice, else the expected one."""
    return actual if isinstance(expected, AnyOf) else expected


class _Project:
    """The resolved project, with a short repr for Hypothesis' falsifying-example report."""

    def __init__(self, resolved) -> None:
        self.resolved = resolved

    def __repr__(self) -> str:
        return "<reference project>"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> _Project:
    root = write_project(tmp_path_factory.mktemp("reference"), PROJECT_YAML, CDP_YAML)
    return _Project(load_project(root, environ={}))


def check(project: _Project, messages: list[dict], split: int, as_of: datetime = AS_OF) -> None:
    ws = Workspace(project.resolved)
    try:
        ws.land(*messages[:split])
        ws.land(*messages[split:])
        ws.run(as_of)
        actual_traits = ws.traits()
        actual_members: dict[str, dict[str, str | None]] = {}
        for audience, profile_id, split_name in ws.query(
            "SELECT audience, profile_id, split FROM cdp.audience_members"
        ):
            actual_members.setdefault(audience, {})[profile_id] = split_name
    finally:
        ws.warehouse.close()

    rows = ref.land(messages)
    expected_traits = ref.compute_traits(rows, as_of, TRAITS)
    assert set(actual_traits) == set(expected_traits), "profiles differ"
    problems = []
    resolved: dict[str, dict[str, Any]] = {}
    for profile_id, expected in sorted(expected_traits.items()):
        actual = actual_traits[profile_id]
        resolved[profile_id] = {}
        for name, value in expected.items():
            if not same(value, actual[name]):
                problems.append(f"{profile_id}.{name}: expected {value!r}, got {actual[name]!r}")
            resolved[profile_id][name] = resolve(value, actual[name])
    assert not problems, "traits differ:\n" + "\n".join(problems)

    expected_members = ref.compute_members(rows, as_of, resolved, AUDIENCES)
    for audience in AUDIENCES:
        assert actual_members.get(audience.name, {}) == expected_members[audience.name], (
            f"audience {audience.name}: expected {expected_members[audience.name]}, "
            f"got {actual_members.get(audience.name, {})}"
        )


def _m(message_id: str, **fields: Any) -> dict:
    return {"messageId": message_id, **fields}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=event_sets())
@example(data=([], 0, AS_OF))
@example(data=(  # first copy wins across loads, whatever its content; the later copy is ignored
    [_m("m0", type="track", userId="u1", event="Purchase", timestamp="2026-06-29T00:00:00Z",
        properties={"amount": "2.5", "kind": "a"}),
     _m("m0", type="track", userId="u2", event="Signup", timestamp="2026-06-29T00:00:00Z",
        properties={"amount": 9})], 1, AS_OF))
@example(data=(  # window edges; u1 lapsed (active 60d..30d ago, silent since, not free)
    [_m("m0", type="track", userId="u1", event="Purchase", timestamp="2026-05-31T00:00:01Z",
        properties={"amount": 3}),
     _m("m1", type="track", userId="u1", event="Purchase", timestamp="2026-05-01T00:00:00Z",
        properties={"amount": 4, "kind": "b"}),
     _m("m2", type="identify", userId="u1", traits={"plan": "pro"}, timestamp="2026-05-02T00:00:00Z"),
     _m("m3", type="identify", userId="u1", traits={"plan": "free"}, timestamp="2026-06-30T00:00:00Z"),
     _m("m4", type="track", userId="u2", event="Purchase", timestamp="2026-05-31T00:00:00Z",
        properties={"amount": 5}),
     _m("m5", type="identify", userId="u2", traits={"plan": "team"}, timestamp="2026-05-02T00:00:00Z"),
     _m("m6", type="page", anonymousId="a1", name="Home", timestamp="2026-06-29T22:00:00Z"),
     _m("m7", type="track", anonymousId="a1", event="Signup", timestamp="2026-06-29T23:59:00+02:00",
        properties={"kind": "b"})], 4, AS_OF))
@example(data=(  # most_frequent tie → the value whose latest occurrence is latest (not first);
    # a later identify without the key, or with it null, does not erase `trait`
    [_m("m0", type="track", userId="u1", event="View", timestamp="2026-06-20T00:00:00Z", properties={"kind": "a"}),
     _m("m1", type="track", userId="u1", event="View", timestamp="2026-06-21T00:00:00Z", properties={"kind": "b"}),
     _m("m2", type="page", userId="u1", name="Home", timestamp="2026-06-22T00:00:00Z", properties={"kind": "b"}),
     _m("m3", type="screen", userId="u1", name="Home", timestamp="2026-06-23T00:00:00Z", properties={"kind": "a"}),
     _m("m4", type="identify", userId="u2", timestamp="2026-06-20T00:00:00Z", traits={"plan": "pro", "score": "7"}),
     _m("m5", type="identify", userId="u2", timestamp="2026-06-21T00:00:00Z", traits={"plan": None}),
     _m("m6", type="group", userId="u2", groupId="g1", timestamp="2026-06-22T00:00:00Z", traits={"plan": "free"}),
     _m("m7", type="identify", userId="u2", timestamp="2026-06-22T00:00:00Z", traits={})], 2, AS_OF))
@example(data=(  # regression: a `sql` trait that is one bare aggregate (`count(*)`) must count
    # only track/page/screen rows, not identify/group/alias (bug: the FILTER is not applied
    # when the aggregate is the root of the fragment)
    [_m("m0", type="identify", userId="u1", traits={}, timestamp="2026-06-29T00:00:00Z")], 0, AS_OF))
def test_run_matches_reference(project, data):
    messages, split, as_of = data
    check(project, messages, split, as_of)
