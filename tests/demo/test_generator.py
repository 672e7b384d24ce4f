"""The demo generator: Segment-spec shape, determinism, and data the example audiences find."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cdp_warehouse.demo.generator import generate_events, write_jsonl

END = datetime(2026, 6, 30, tzinfo=UTC)
DAYS = 120
N_EVENTS = 20_000


@pytest.fixture(scope="module")
def messages() -> list[dict[str, Any]]:
    return list(generate_events(N_EVENTS, seed=7, end=END, days=DAYS))


def _ts(message: dict[str, Any], key: str = "timestamp") -> datetime:
    return datetime.fromisoformat(message[key])


def _audiences(messages: list[dict[str, Any]], as_of: datetime) -> tuple[set[str], set[str]]:
    """high_value_user and churn_risk members (by userId), evaluated in plain Python.

    Windows use the raw ``timestamp`` (clock skew ignored). Anonymous-only messages count for
    the user their anonymousId (or alias previousId) is linked to.
    """
    owner: dict[str, str] = {}
    for m in messages:
        if m.get("userId") and m.get("anonymousId"):
            owner.setdefault(m["anonymousId"], m["userId"])
        if m["type"] == "alias":
            owner.setdefault(m["previousId"], m["userId"])

    plan: dict[str, tuple[datetime, str]] = {}
    reports_30d: Counter[str] = Counter()
    support_30d: Counter[str] = Counter()
    events_30d: Counter[str] = Counter()
    events_60d_30d: Counter[str] = Counter()
    for m in messages:
        user = m.get("userId") or owner.get(m.get("anonymousId", ""))
        ts = _ts(m)
        if user is None or ts >= as_of:
            continue
        new_plan = m["traits"].get("plan") if m["type"] == "identify" else None
        if new_plan is not None and (user not in plan or ts >= plan[user][0]):
            plan[user] = (ts, new_plan)
        if m["type"] in ("track", "page", "screen"):
            if ts >= as_of - timedelta(days=30):
                events_30d[user] += 1
                reports_30d[user] += m.get("event") == "Report Generated"
                support_30d[user] += m.get("event") == "Support Contacted"
            elif ts >= as_of - timedelta(days=60):
                events_60d_30d[user] += 1

    high_value = {u for u, (_, p) in plan.items() if reports_30d[u] >= 10 and p == "enterprise"}
    churn_risk = {
        u
        for u, (_, p) in plan.items()
        if events_60d_30d[u] > 0 and events_30d[u] == 0 and p != "free" and support_30d[u] == 0
    }
    return high_value, churn_risk


def test_same_seed_gives_the_same_messages() -> None:
    first = list(generate_events(3_000, seed=11, end=END))
    assert first == list(generate_events(3_000, seed=11, end=END))
    assert first != list(generate_events(3_000, seed=12, end=END))


def test_naive_end_is_taken_as_utc() -> None:
    naive = END.replace(tzinfo=None)
    assert list(generate_events(1_500, end=naive)) == list(generate_events(1_500, end=END))


def test_count_is_about_n_events(messages: list[dict[str, Any]]) -> None:
    assert abs(len(messages) - N_EVENTS) <= N_EVENTS * 0.05


def test_message_ids_are_unique(messages: list[dict[str, Any]]) -> None:
    ids = [m["messageId"] for m in messages]
    assert all(isinstance(i, str) and i for i in ids)
    assert len(set(ids)) == len(ids)


def test_every_message_has_user_id_or_anonymous_id(messages: list[dict[str, Any]]) -> None:
    assert all(m.get("userId") or m.get("anonymousId") for m in messages)


def test_types_are_mostly_track_and_page(messages: list[dict[str, Any]]) -> None:
    types = Counter(m["type"] for m in messages)
    assert set(types) == {"track", "page", "identify", "group", "alias"}
    assert types["track"] + types["page"] > 0.9 * len(messages)


def test_per_type_fields(messages: list[dict[str, Any]]) -> None:
    for m in messages:
        assert isinstance(m["context"]["library"]["name"], str)
        if m["type"] == "track":
            assert isinstance(m["event"], str) and m["event"]
            assert isinstance(m["properties"], dict)
        elif m["type"] == "page":
            assert m["name"]
            assert {"url", "path", "title"} <= set(m["properties"])
        elif m["type"] == "alias":
            assert m["previousId"] and m["userId"]
        elif m["type"] == "group":
            assert m["groupId"] and {"name", "employees", "industry"} <= set(m["traits"])
        elif m["type"] == "identify":
            assert m["userId"] and isinstance(m["traits"], dict)


def test_users_anonymous_visitors_and_identity_links(messages: list[dict[str, Any]]) -> None:
    user_ids = {m["userId"] for m in messages if "userId" in m}
    assert all(u.startswith("u_") and len(u) == 8 for u in user_ids)
    linked = {m["anonymousId"] for m in messages if "userId" in m and "anonymousId" in m}
    never_identified = {m["anonymousId"] for m in messages if "userId" not in m} - linked
    assert never_identified, "some visitors never sign up"
    aliases = [m for m in messages if m["type"] == "alias"]
    assert aliases and all(a["previousId"] in linked for a in aliases)
    assert any(m["context"].get("traits", {}).get("email") for m in messages)
    full = [
        m["traits"] for m in messages if m["type"] == "identify" and "first_name" in m["traits"]
    ]
    assert full
    assert all({"email", "plan", "first_name", "last_name", "company"} <= set(t) for t in full)
    emails_by_user: dict[str, set[str]] = {}
    for m in messages:
        if m["type"] == "identify" and "email" in m["traits"]:
            emails_by_user.setdefault(m["traits"]["email"], set()).add(m["userId"])
    assert all(len(users) == 1 for users in emails_by_user.values()), "an email is one person"


def test_timestamps_are_before_end_and_within_days(messages: list[dict[str, Any]]) -> None:
    start = END - timedelta(days=DAYS)
    for m in messages:
        for key in ("timestamp", "sentAt", "receivedAt"):
            assert m[key].endswith("+00:00")
            assert _ts(m, key) < END
        assert _ts(m) >= start


def test_sent_and_received_follow_the_event_and_some_clocks_are_skewed(
    messages: list[dict[str, Any]],
) -> None:
    skewed = 0
    for m in messages:
        timestamp, sent, received = _ts(m), _ts(m, "sentAt"), _ts(m, "receivedAt")
        assert timestamp < sent < timestamp + timedelta(seconds=31)
        if abs(received - sent) > timedelta(seconds=10):
            skewed += 1  # the device clock is off: receivedAt is the server's
        else:
            assert sent < received
    assert 0.005 * len(messages) < skewed < 0.05 * len(messages)


def test_tracked_events_carry_the_planned_properties(messages: list[dict[str, Any]]) -> None:
    tracks = [m for m in messages if m["type"] == "track"]
    names = Counter(m["event"] for m in tracks)
    assert 10 <= len(names) <= 15
    for m in tracks:
        props = m["properties"]
        if m["event"] == "Report Generated":
            assert props["report_type"] in {"usage", "performance", "custom"}
            assert isinstance(props["data_sources_count"], int)
            assert isinstance(props["time_to_generate_ms"], int | float)
        elif m["event"] == "Subscription Upgraded":
            assert {"previous_plan", "new_plan", "mrr_change", "triggered_by"} <= set(props)
            assert props["triggered_by"] in {"self-service", "sales"}
        elif m["event"] == "Payment Processed":
            assert props["currency"] == "USD" and props["invoice_id"] and props["payment_method"]
            assert float(props["revenue"]) > 0
        elif m["event"] == "Support Contacted":
            assert props["channel"] in {"chat", "email", "phone"}
    upgrades = [m for m in tracks if m["event"] == "Subscription Upgraded"]
    assert any(m["properties"]["triggered_by"] == "self-service" for m in upgrades)
    payments = [m["properties"]["revenue"] for m in tracks if m["event"] == "Payment Processed"]
    assert any(isinstance(r, str) for r in payments), "some SDKs send revenue as a string"
    assert sum(isinstance(r, float) for r in payments) > 0.8 * len(payments)


def test_plans_change_over_time(messages: list[dict[str, Any]]) -> None:
    plans: dict[str, set[str]] = {}
    for m in messages:
        if m["type"] == "identify" and "plan" in m["traits"]:
            plans.setdefault(m["userId"], set()).add(m["traits"]["plan"])
            assert m["traits"]["plan"] in {"free", "growth", "enterprise"}
    assert any(len(p) > 1 for p in plans.values())
    assert any("plan" not in m["traits"] for m in messages if m["type"] == "identify")


def test_both_example_audiences_have_members(messages: list[dict[str, Any]]) -> None:
    high_value, churn_risk = _audiences(messages, END)
    identified = {m["userId"] for m in messages if "userId" in m}
    assert 1 <= len(high_value) <= 0.15 * len(identified)
    assert 1 <= len(churn_risk) <= 0.2 * len(identified)


def test_write_jsonl_writes_one_message_per_line(tmp_path: Any) -> None:
    path = tmp_path / "out" / "events.jsonl"
    count = write_jsonl(path, 2_000, seed=3, end=END)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert count == len(lines) > 0
    assert [json.loads(line) for line in lines] == list(generate_events(2_000, seed=3, end=END))


def test_default_end_is_the_current_hour() -> None:
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    got = list(generate_events(1_500))
    assert max(_ts(m, "receivedAt") for m in got) < hour + timedelta(hours=1)
    assert min(_ts(m) for m in got) >= hour - timedelta(days=DAYS)


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="n_events"):
        generate_events(0)
    with pytest.raises(ValueError, match="days"):
        generate_events(100, days=0)
