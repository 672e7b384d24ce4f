"""What every destination must do (spec section 6), run against each one's fake server.

A new destination adds an ``Adapter``: its name in ``SYNC_CDP_YAML`` and how to read, from
its fake's state, who the destination believes is in the audience.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from tests.conftest import track
from tests.fakes import Fault
from tests.sync.conftest import ACTIVE, Synced

WINDOWED = ACTIVE.replace("count: {event: Report}", "count: {event: Report, window: 7d}")
EARLY, LATER = datetime(2026, 6, 5, tzinfo=UTC), datetime(2026, 7, 10, tzinfo=UTC)


def braze_members(s: Synced) -> set[str]:
    return {u.external_id for u in s.braze.users.values() if u.attributes.get("active") is True}


def slack_members(s: Synced) -> set[str]:
    """Replay the posted messages: who entered, minus who exited since."""
    inside: set[str] = set()
    for message in s.slack.messages:
        for verb, names in re.findall(r"^\d+ (entered|exited): (.*)$", message["text"], re.MULTILINE):
            people = set(names.split(", "))
            inside = inside | people if verb == "entered" else inside - people
    return inside


def salesforce_members(s: Synced) -> set[str]:
    return {r["External_Id__c"] for r in s.salesforce.records("Contact").values() if r.get("Active__c") is True}


def intercom_members(s: Synced) -> set[str]:
    return s.intercom.tagged("Active")


@dataclass(frozen=True)
class Adapter:
    destination: str
    members: Callable[[Synced], set[str]]
    fake: Callable[[Synced], object]
    throttle: Callable[[], Fault]  # a 429 as the vendor sends it

    def __str__(self) -> str:
        return self.destination


ADAPTERS = [
    Adapter("braze", braze_members, lambda s: s.braze, lambda: Fault(status=429)),  # reset header from the fake
    # Salesforce's REST API sends no 429 (its limit is the daily allocation, a 403); a proxy
    # in front of it may, and the shared HTTP layer must wait it out all the same.
    Adapter("salesforce", salesforce_members, lambda s: s.salesforce,
            lambda: Fault(status=429, headers={"Retry-After": "1"})),
    # Intercom's 429 sends no Retry-After: the wait comes from X-RateLimit-Reset (epoch seconds);
    # a reset 1 s away keeps the test short (the fake's own windows are 10 s).
    Adapter("intercom", intercom_members, lambda s: s.intercom,
            lambda: Fault(status=429, headers={"X-RateLimit-Reset": str(int(time.time()) + 1)})),
    Adapter("slack", slack_members, lambda s: s.slack, lambda: Fault(status=429, headers={"Retry-After": "1"})),
]


def reporters(*users: str, at: str = "2026-06-02T00:00:00Z") -> list[dict]:
    return [track(user, "Report", at) for user in users]


@pytest.fixture(params=ADAPTERS, ids=str)
def adapter(request) -> Adapter:
    return request.param


def test_delivers_every_member_and_records_them(synced, adapter):
    s = synced()
    s.ws.land(*reporters("u1", "u2", "u3"))
    s.ws.run()
    outcome = s.sync("active", to=(adapter.destination,))[adapter.destination]
    assert (outcome.added, outcome.failed, outcome.status) == (3, 0, "success")
    assert adapter.members(s) == {"u1", "u2", "u3"}
    assert set(s.state(adapter.destination)) == {"u1", "u2", "u3"}


def test_a_second_run_without_changes_makes_no_request(synced, adapter):
    s = synced()
    s.ws.land(*reporters("u1"))
    s.ws.run()
    s.sync("active", to=(adapter.destination,))
    before = len(adapter.fake(s).requests)
    s.ws.run()
    outcome = s.sync("active", to=(adapter.destination,))[adapter.destination]
    assert (outcome.requests, len(adapter.fake(s).requests), outcome.status) == (0, before, "success")


def test_dry_run_calls_nothing_and_keeps_no_state(synced, adapter):
    s = synced()
    s.ws.land(*reporters("u1"))
    s.ws.run()
    outcome = s.sync("active", to=(adapter.destination,), dry_run=True)[adapter.destination]
    assert outcome.planned == {"added": 1} and outcome.samples
    assert adapter.fake(s).requests == [] and s.state(adapter.destination) == {}


def test_transient_errors_are_retried(synced, adapter):
    s = synced()
    adapter.fake(s).inject(Fault(status=503), Fault(status=500))
    s.ws.land(*reporters("u1", "u2"))
    s.ws.run()
    outcome = s.sync("active", to=(adapter.destination,))[adapter.destination]
    assert (outcome.status, outcome.added) == ("success", 2)
    assert adapter.members(s) == {"u1", "u2"}


def test_rate_limits_are_waited_out(synced, adapter):
    s = synced()
    adapter.fake(s).inject(adapter.throttle())
    s.ws.land(*reporters("u1"))
    s.ws.run()
    outcome = s.sync("active", to=(adapter.destination,))[adapter.destination]
    assert (outcome.status, outcome.throttled) == ("success", 1)
    assert adapter.members(s) == {"u1"}


def test_exits_reach_the_destination(synced, adapter):
    s = synced(WINDOWED)
    s.ws.land(*reporters("u1", "u2"))
    s.ws.run(EARLY)
    s.sync("active", to=(adapter.destination,))
    s.ws.land(*reporters("u1", at="2026-07-08T00:00:00Z"))
    s.ws.run(LATER)
    outcome = s.sync("active", to=(adapter.destination,))[adapter.destination]
    assert outcome.removed == 1
    assert adapter.members(s) == {"u1"}
