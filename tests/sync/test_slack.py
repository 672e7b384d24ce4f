"""Slack: one message per run naming who entered and exited, capped; none when nobody did."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from cdp_warehouse.sync.destinations.slack import NAMES_SHOWN
from tests.conftest import identify, track
from tests.fakes import FakeSlack, Fault
from tests.sync.conftest import ACTIVE

WINDOWED = ACTIVE.replace("count: {event: Report}", "count: {event: Report, window: 7d}")
EARLY, LATER = datetime(2026, 6, 5, tzinfo=UTC), datetime(2026, 7, 10, tzinfo=UTC)


def reporters(*users: str, at: str = "2026-06-02T00:00:00Z") -> list[dict]:
    return [track(user, "Report", at) for user in users]


def test_a_message_lists_who_entered_then_who_exited(synced):
    s = synced(WINDOWED)
    s.ws.land(*reporters("u1", "u2"))
    s.ws.run(EARLY)
    first = s.sync("active", to=("slack",))["slack"]
    assert (first.added, first.status) == (2, "success")
    assert s.slack.messages[-1]["text"] == "*Active users*\n2 entered: u1, u2"

    s.ws.land(*reporters("u3", at="2026-07-08T00:00:00Z"))
    s.ws.run(LATER)
    second = s.sync("active", to=("slack",))["slack"]
    assert (second.added, second.removed) == (1, 2)
    assert s.slack.messages[-1]["text"] == "*Active users*\n1 entered: u3\n2 exited: u1, u2"
    assert len(s.slack.messages) == 2


def test_no_message_when_nobody_entered_or_exited(synced):
    s = synced()
    s.ws.land(*reporters("u1"))
    s.ws.run()
    s.sync("active", to=("slack",))
    s.ws.land(identify("u1", "2026-06-03T00:00:00Z", plan="pro"))
    s.ws.run()
    outcome = s.sync("active", to=("slack",))["slack"]
    assert (outcome.added, outcome.requests, len(s.slack.messages)) == (0, 0, 1)


def test_exits_are_not_posted_when_only_entries_are_asked_for(synced):
    s = synced(WINDOWED.replace("on: both", "on: entered"))
    s.ws.land(*reporters("u1"))
    s.ws.run(EARLY)
    s.sync("active", to=("slack",))
    s.ws.run(LATER)
    outcome = s.sync("active", to=("slack",))["slack"]
    assert (outcome.removed, outcome.requests, len(s.slack.messages)) == (1, 0, 1)
    # u1 is recorded as out: coming back is news again
    s.ws.land(*reporters("u1", at="2026-07-09T00:00:00Z"))
    s.ws.run(LATER)
    s.sync("active", to=("slack",))
    assert s.slack.messages[-1]["text"] == "*Active users*\n1 entered: u1"


def test_a_long_list_is_capped_with_and_n_more(synced):
    s = synced()
    users = [f"u{i:03d}" for i in range(NAMES_SHOWN + 5)]
    s.ws.land(*reporters(*users))
    s.ws.run()
    s.sync("active", to=("slack",))
    text = s.slack.messages[-1]["text"]
    assert text.startswith(f"*Active users*\n{len(users)} entered: u000, u001")
    assert text.endswith(f"u{NAMES_SHOWN - 1:03d} and 5 more")


def test_429_retry_after_is_honoured(synced):
    s = synced(slack=FakeSlack())
    s.slack.inject(Fault(status=429, headers={"Retry-After": "1"}, times=2))
    s.ws.land(*reporters("u1"))
    s.ws.run()
    started = time.monotonic()
    outcome = s.sync("active", to=("slack",))["slack"]
    assert (outcome.status, outcome.requests, outcome.throttled, len(s.slack.messages)) == ("success", 3, 2, 1)
    assert time.monotonic() - started >= 2  # waited the second Retry-After asked for, twice


def test_a_dead_webhook_fails_the_run_and_keeps_the_entries_for_next_time(synced):
    s = synced()
    s.slack.inject(Fault(status=404, body="channel_not_found"))
    s.ws.land(*reporters("u1"))
    s.ws.run()
    outcome = s.sync("active", to=("slack",))["slack"]
    assert outcome.status == "failed" and "channel_not_found" in outcome.error
    assert s.state("slack") == {}
    assert s.sync("active", to=("slack",))["slack"].added == 1
    assert s.slack.messages[-1]["text"] == "*Active users*\n1 entered: u1"
