"""Intercom: contacts found or created by external_id (never twice, whatever search lags),
membership as a tag, traits as custom attributes created with the trait's type first.

Every story runs against the fake Intercom, which checks each request and answer against
Intercom's OpenAPI description; the fixture asserts it found nothing off the description.
"""

from __future__ import annotations

import calendar
import time
from datetime import UTC, datetime

import pytest

from cdp_warehouse.sync.http import HttpClient
from tests.conftest import identify, track
from tests.fakes import Fault
from tests.fakes.intercom import FakeIntercom
from tests.specs.test_validation import MAIN, line
from tests.sync.conftest import ACTIVE, SYNC_CDP_YAML, sync_entry_problem

EARLY, LATER = datetime(2026, 6, 5, tzinfo=UTC), datetime(2026, 7, 10, tzinfo=UTC)
WINDOWED = ACTIVE.replace("count: {event: Report}", "count: {event: Report, window: 7d}")
TO = ("intercom",)

# Every kind of value a trait yields, and what Intercom data type it must become.
TYPED = """
traits:
  - name: plan
    trait: {trait: plan}
  - name: reports
    count: {event: Report}
  - name: spend
    sum: {event: Order, property: amount}
  - name: first_report
    first_seen: {event: Report}
  - name: beta
    trait: {trait: beta, type: boolean}
audiences:
  - name: active
    where: "reports >= 1"
    sync:
      - to: intercom
        membership: {tag: Active}
        fields: {plan: plan, reports: reports, spend: spend, first_report: first_report, beta: beta,
                 member: in_audience}
"""

# Two audiences with the same people, synced side by side to the same workspace.
TWO_AUDIENCES = """
traits:
  - name: reports
    count: {event: Report}
audiences:
  - name: readers
    where: "reports >= 1"
    sync:
      - to: intercom
        membership: {tag: Readers}
        fields: {reports: reports}
  - name: writers
    where: "reports >= 1"
    sync:
      - to: intercom
        membership: {tag: Writers}
        fields: {reports: reports}
"""


@pytest.fixture
def synced_intercom(synced):
    """``synced`` whose fake Intercom must end the test without a request or answer off
    Intercom's OpenAPI description."""
    made = []

    def make(audiences_yaml: str = ACTIVE, **fakes):
        s = synced(audiences_yaml, **fakes)
        made.append(s)
        return s

    yield make
    for s in made:
        assert s.intercom.violations == []


def members(*users: str, plan: str = "pro", at: str = "2026-06-02T00:00:00Z") -> list[dict]:
    messages = []
    for user in users:
        messages += [identify(user, "2026-06-01T00:00:00Z", plan=plan, email=f"{user}@example.com"),
                     track(user, "Report", at)]
    return messages


def calls(intercom: FakeIntercom, since: int = 0) -> list[str]:
    """``METHOD /path`` of every request after the first ``since``; contact and tag ids as ``*``."""
    out = []
    for r in intercom.requests[since:]:
        parts = r.path.split("/")
        if len(parts) > 2 and parts[1] == "contacts" and parts[2] != "search":
            parts[2] = "*"
        if len(parts) > 4:
            parts[4] = "*"
        out.append(f"{r.method} {'/'.join(parts)}")
    return out


def first_write(intercom: FakeIntercom) -> int:
    """Index of the first request that writes custom attributes on a contact."""
    return next(i for i, r in enumerate(intercom.requests) if r.path.startswith("/contacts")
                and isinstance(r.body, dict) and r.body.get("custom_attributes"))


def ids_kept(s) -> dict[str, str]:
    return dict(s.ws.query("SELECT row_key, remote_id FROM cdp.sync_remote_ids WHERE destination = 'intercom'"))


# ---------------------------------------------------------------------------- find or create

def test_first_sync_finds_or_creates_each_contact_and_a_second_sends_nothing(synced_intercom):
    s = synced_intercom()
    existing = s.intercom.add_contact(external_id="u2", email="u2@example.com")  # the Messenger made u2
    s.ws.land(*members("u1", "u2"))
    s.ws.run()
    first = s.sync("active", to=TO)["intercom"]
    assert (first.added, first.failed, first.status) == (2, 0, "success")

    u1 = s.intercom.contact(external_id="u1")
    assert (u1.role, u1.email, u1.custom_attributes) == ("user", "u1@example.com", {"plan": "pro", "reports": 1})
    u2 = s.intercom.contact(external_id="u2")
    assert u2.id == existing and u2.custom_attributes == {"plan": "pro", "reports": 1}
    assert len(s.intercom.contacts) == 2
    assert s.intercom.tagged("Active") == {"u1", "u2"}
    assert ids_kept(s) == {"u1": u1.id, "u2": existing}
    # the tag and the data attributes once per run, the attributes before any contact carries them
    made = calls(s.intercom)
    assert (made.count("GET /data_attributes"), made.count("POST /tags"), made.count("POST /data_attributes")) == (1, 1, 2)
    assert made.index("GET /data_attributes") < first_write(s.intercom)
    assert max(i for i, c in enumerate(made) if c == "POST /data_attributes") < first_write(s.intercom)
    assert s.intercom.data_attributes == {"plan": "string", "reports": "integer"}

    sent = len(s.intercom.requests)
    s.ws.run()
    second = s.sync("active", to=TO)["intercom"]
    assert (second.added, second.changed, second.removed, second.requests, second.status) == (0, 0, 0, 0, "success")
    assert len(s.intercom.requests) == sent  # not even the tag or the attributes


def test_a_changed_trait_sends_only_that_attribute_to_the_known_contact(synced_intercom):
    s = synced_intercom()
    s.ws.land(*members("u1", "u2"))
    s.ws.run()
    s.sync("active", to=TO)
    before = len(s.intercom.requests)
    s.ws.land(track("u1", "Report", "2026-06-03T00:00:00Z"))
    s.ws.run()
    outcome = s.sync("active", to=TO)["intercom"]
    assert (outcome.added, outcome.changed, outcome.status) == (0, 1, "success")
    assert calls(s.intercom, before) == ["GET /data_attributes", "PUT /contacts/*"]  # no search: the id is ours
    assert s.intercom.requests[-1].body == {"custom_attributes": {"reports": 2}}
    assert s.intercom.contact(external_id="u1").custom_attributes == {"plan": "pro", "reports": 2}


def test_an_exit_under_mirror_untags_and_leaves_the_attributes(synced_intercom):
    s = synced_intercom(WINDOWED)
    s.ws.land(*members("u1", "u2"))
    s.ws.run(EARLY)
    s.sync("active", to=TO)
    before = len(s.intercom.requests)
    s.ws.land(track("u1", "Report", "2026-07-05T00:00:00Z"))  # u2's report falls out of the window
    s.ws.run(LATER)
    outcome = s.sync("active", to=TO)["intercom"]
    assert (outcome.removed, outcome.changed, outcome.status) == (1, 0, "success")
    assert calls(s.intercom, before) == ["POST /tags", "DELETE /contacts/*/tags/*"]
    assert s.intercom.tag_names(external_id="u2") == set()
    assert s.intercom.contact(external_id="u2").custom_attributes == {"plan": "pro", "reports": 1}
    assert s.state("intercom")["u2"][0] is False
    # back in: tagged again
    s.ws.land(track("u2", "Report", "2026-07-09T00:00:00Z"))
    s.ws.run(LATER)
    assert s.sync("active", to=TO)["intercom"].added == 1
    assert s.intercom.tagged("Active") == {"u1", "u2"}


def test_dry_run_shows_each_persons_plan_and_calls_nothing(synced_intercom):
    s = synced_intercom()
    s.ws.land(*members("u1"))
    s.ws.run()
    outcome = s.sync("active", to=TO, dry_run=True)["intercom"]
    assert outcome.samples[0].body == {"contact": {"external_id": "u1"}, "email": "u1@example.com",
                                       "custom_attributes": {"plan": "pro", "reports": 1}, "tag": "Active"}
    assert s.intercom.requests == [] and s.state("intercom") == {}


def test_upsert_never_untags(synced_intercom):
    s = synced_intercom(WINDOWED.replace('mode: "mirror"    # quoted, like', 'mode: upsert    # like'))
    s.ws.land(*members("u1"))
    s.ws.run(EARLY)
    s.sync("active", to=TO)
    s.ws.run(LATER)
    sent = len(s.intercom.requests)
    assert s.sync("active", to=TO)["intercom"].removed == 0
    assert len(s.intercom.requests) == sent and s.intercom.tagged("Active") == {"u1"}


# ---------------------------------------------------------------------------- search lag

def test_search_lag_never_makes_a_duplicate(synced_intercom):
    # search misses every new contact for a long while
    s = synced_intercom(intercom=FakeIntercom(search_delay=3600))
    s.intercom.add_contact(external_id="u2", searchable=False)  # made a moment ago by the Messenger
    s.ws.land(*members("u1", "u2"))
    s.ws.run()
    first = s.sync("active", to=TO)["intercom"]
    assert (first.added, first.status) == (2, "success")
    conflicts = [r for r in s.intercom.requests if r.status == 409]
    assert [r.body["external_id"] for r in conflicts] == ["u2"]  # search missed u2; the create named it
    assert len(s.intercom.find_all(external_id="u2")) == 1

    # the next run uses the ids we kept: no search, no create, even though search still lags
    before = len(s.intercom.requests)
    second = s.sync("active", to=TO, full_resync=True)["intercom"]
    assert (second.added, second.status) == (2, "success")
    assert not {"POST /contacts/search", "POST /contacts"} & set(calls(s.intercom, before))

    # our id map lost: search misses both, each create answers 409 with the id: still one each
    s.ws.warehouse.execute("DELETE FROM cdp.sync_remote_ids")
    third = s.sync("active", to=TO, full_resync=True)["intercom"]
    assert (third.added, third.status) == (2, "success")
    assert [len(s.intercom.find_all(external_id=u)) for u in ("u1", "u2")] == [1, 1]
    assert set(ids_kept(s)) == {"u1", "u2"}
    assert s.intercom.tagged("Active") == {"u1", "u2"}


def test_a_contact_deleted_in_intercom_is_made_again_with_its_tag(synced_intercom):
    s = synced_intercom()
    s.ws.land(*members("u1"))
    s.ws.run()
    s.sync("active", to=TO)
    old = s.intercom.contact(external_id="u1").id
    s.intercom.delete_contact(old)
    s.ws.land(track("u1", "Report", "2026-06-03T00:00:00Z"))
    s.ws.run()
    outcome = s.sync("active", to=TO)["intercom"]
    assert (outcome.changed, outcome.status) == (1, "success")
    again = s.intercom.contact(external_id="u1")
    assert again.id != old and ids_kept(s) == {"u1": again.id}
    assert again.custom_attributes == {"reports": 2}  # a change carries only what changed
    assert s.intercom.tag_names(external_id="u1") == {"Active"}


def test_an_archived_contact_is_rejected_with_a_hint(synced_intercom):
    s = synced_intercom()
    s.intercom.archive(s.intercom.add_contact(external_id="u1"))
    s.ws.land(*members("u1"))
    s.ws.run()
    outcome = s.sync("active", to=TO)["intercom"]
    assert (outcome.failed, outcome.status) == (1, "partial")
    assert "unarchive it in Intercom" in s.rejections()["u1"][0]


# ---------------------------------------------------------------------------- tags

def test_a_tag_removed_by_hand_is_restored_on_full_resync(synced_intercom):
    s = synced_intercom()
    s.ws.land(*members("u1", "u2"))
    s.ws.run()
    s.sync("active", to=TO)
    s.intercom.untag_by_hand(s.intercom.contact(external_id="u1").id, "Active")
    assert s.sync("active", to=TO)["intercom"].requests == 0  # nothing changed on our side
    assert s.intercom.tagged("Active") == {"u2"}
    outcome = s.sync("active", to=TO, full_resync=True)["intercom"]
    assert (outcome.added, outcome.status) == (2, "success")
    assert s.intercom.tagged("Active") == {"u1", "u2"}
    assert len(s.intercom.tags) == 1  # POST /tags found the tag by name


def test_two_audiences_in_parallel_share_contacts_and_attributes(synced_intercom):
    s = synced_intercom(TWO_AUDIENCES)
    s.ws.land(*members("u1", "u2", "u3"))
    s.ws.run()
    s.sync(to=TO)  # both (audience, intercom) jobs at once, each in its own thread
    for user in ("u1", "u2", "u3"):
        assert len(s.intercom.find_all(external_id=user)) == 1
        assert s.intercom.tag_names(external_id=user) == {"Readers", "Writers"}
    assert s.intercom.data_attributes == {"reports": "integer"}
    runs = s.ws.query("SELECT audience, added, status FROM cdp.sync_runs ORDER BY audience")
    assert runs == [("readers", 3, "success"), ("writers", 3, "success")]


# ---------------------------------------------------------------------------- data attributes

def test_missing_data_attributes_are_created_with_the_traits_types_first(synced_intercom):
    s = synced_intercom(TYPED)
    s.intercom.add_data_attribute("plan", "string")  # already there: not created again
    s.ws.land(identify("u1", "2026-06-01T00:00:00Z", plan="pro", beta=True),
              track("u1", "Report", "2026-06-02T00:00:00Z"), track("u1", "Order", "2026-06-02T01:00:00Z", amount=19.5),
              track("u2", "Report", "2026-06-03T00:00:00Z"))  # u2: no plan, beta or spend (nulls)
    s.ws.run()
    outcome = s.sync("active", to=TO)["intercom"]
    assert (outcome.added, outcome.status) == (2, "success")
    assert s.intercom.data_attributes == {"plan": "string", "reports": "integer", "spend": "float",
                                          "first_report": "datetime", "beta": "boolean", "member": "boolean"}
    created = [(i, r.body["name"]) for i, r in enumerate(s.intercom.requests)
               if r.path == "/data_attributes" and r.method == "POST"]
    assert {name for _, name in created} == {"reports", "spend", "first_report", "beta", "member"}
    assert max(i for i, _ in created) < first_write(s.intercom)
    june_2 = calendar.timegm((2026, 6, 2, 0, 0, 0))
    assert s.intercom.contact(external_id="u1").custom_attributes == {
        "plan": "pro", "reports": 1, "spend": 19.5, "first_report": june_2, "beta": True, "member": True}
    assert s.intercom.contact(external_id="u2").custom_attributes == {
        "reports": 1, "first_report": june_2 + 86400, "member": True}  # nulls are skipped


def test_an_attribute_name_intercom_refuses_fails_the_sync_with_a_hint(synced_intercom):
    s = synced_intercom(ACTIVE.replace("fields: {plan: plan, reports: reports}\n      - to: slack",
                                       "fields: {email: plan}\n      - to: slack"))
    s.ws.land(*members("u1"))
    s.ws.run()
    outcome = s.sync("active", to=TO)["intercom"]
    assert outcome.status == "failed"
    assert "data attribute 'email'" in outcome.error and "rename it" in outcome.hint
    assert s.intercom.contacts == []


# ---------------------------------------------------------------------------- errors

def test_a_contact_intercom_refuses_is_kept_with_the_reason_and_retried(synced_intercom):
    s = synced_intercom()
    s.intercom.reject(lambda contact: contact.external_id == "u2", "Email is invalid")
    s.ws.land(*members("u1", "u2", "u3"))
    s.ws.run()
    first = s.sync("active", to=TO)["intercom"]
    assert (first.added, first.failed, first.status) == (2, 1, "partial")
    reason, attempts = s.rejections()["u2"]
    assert reason == "intercom 400 parameter_invalid: Email is invalid" and attempts == 1
    assert "u2" not in s.state("intercom") and s.intercom.contact(external_id="u2") is None

    second = s.sync("active", to=TO)["intercom"]
    assert (second.added, second.failed) == (0, 1) and s.rejections()["u2"][1] == 2

    s.intercom.clear_rejections()
    third = s.sync("active", to=TO)["intercom"]
    assert (third.added, third.failed, third.status) == (1, 0, "success")
    assert s.rejections() == {} and s.intercom.tagged("Active") == {"u1", "u2", "u3"}


@pytest.mark.parametrize("status", [401, 403])
def test_bad_credentials_stop_the_sync(synced_intercom, status):
    s = synced_intercom()
    s.intercom.inject(Fault(status=status))
    s.ws.land(*members("u1"))
    s.ws.run()
    outcome = s.sync("active", to=TO)["intercom"]
    assert outcome.status == "failed" and f"intercom answered {status}" in outcome.error
    assert "access_token" in outcome.hint
    assert s.state("intercom") == {}


def test_identify_by_email_finds_or_creates_users_by_email(synced_intercom):
    s = synced_intercom(ACTIVE.replace("membership: {tag: Active}", "membership: {tag: Active}\n        identify_by: email"))
    known = s.intercom.add_contact(email="ann@x.io")
    s.ws.land(*members("u1"),
              identify(None, "2026-06-01T00:00:00Z", anonymous="a1", email="Ann@X.io"),
              track(None, "Report", "2026-06-02T00:00:00Z", anonymous="a1"),
              identify(None, "2026-06-01T00:00:00Z", anonymous="a2", email="bob@x.io"),
              track(None, "Report", "2026-06-02T00:00:00Z", anonymous="a2"),
              track(None, "Report", "2026-06-02T00:00:00Z", anonymous="a3"))  # no email: skipped
    s.ws.run()
    outcome = s.sync("active", to=TO)["intercom"]
    assert (outcome.added, outcome.status) == (3, "success")
    assert s.intercom.tagged("Active") == {"u1", "ann@x.io", "bob@x.io"}
    assert s.intercom.contact(email="ann@x.io").id == known and len(s.intercom.find_all(email="ann@x.io")) == 1
    bob = s.intercom.contact(email="bob@x.io")
    assert (bob.role, bob.external_id) == ("user", None)


# ---------------------------------------------------------------------------- rate limits

def test_the_http_client_waits_for_the_window_intercoms_headers_announce():
    """X-RateLimit-Remaining: 0 holds the client until X-RateLimit-Reset: no 429 at all."""
    with FakeIntercom(rate_limit=3, window_seconds=1.0) as intercom:
        client = HttpClient(intercom.url, {"Authorization": f"Bearer {intercom.token}", "Intercom-Version": "2.14"},
                            concurrency=1)
        started = time.monotonic()
        statuses = [client.request("GET", "/tags").status_code for _ in range(7)]
        assert statuses == [200] * 7 and intercom.throttled == 0
        assert time.monotonic() - started >= 1.0  # 7 requests need three windows
        assert intercom.violations == []


def test_a_sync_over_the_rate_limit_delivers_everyone(synced_intercom):
    s = synced_intercom(intercom=FakeIntercom(rate_limit=6, window_seconds=1.0))
    s.ws.land(*members("u1", "u2", "u3", "u4"))
    s.ws.run()
    outcome = s.sync("active", to=TO)["intercom"]
    assert (outcome.added, outcome.failed, outcome.status) == (4, 0, "success")
    assert s.intercom.tagged("Active") == {"u1", "u2", "u3", "u4"}
    assert outcome.throttled == s.intercom.throttled  # every 429 was waited out, none failed a row


# ---------------------------------------------------------------------------- validation

@pytest.mark.parametrize(("entry", "key", "needle", "message"), [
    ("- to: intercom\n  membership: {attribute: a}", "membership.attribute", "membership:", "as a tag"),
    ("- to: intercom\n  mode: mirror", "mode", "mode: mirror", "membership: {tag: NAME}"),
    ("- to: intercom\n  object: Contact", "object", "object:", "does not apply to intercom"),
    ("- to: intercom\n  channel: '#x'", "channel", "channel:", "does not apply to intercom"),
    ("- to: intercom\n  events: true", "events", "events:", "braze only"),
])
def test_a_sync_intercom_cannot_do_is_an_error(tmp_path, entry, key, needle, message):
    yaml, problem = sync_entry_problem(tmp_path, entry, SYNC_CDP_YAML, key)
    assert problem.file == MAIN and problem.line == line(yaml, needle)
    assert message in problem.message
