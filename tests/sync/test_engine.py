"""The sync engine against a fake Braze: only changes are sent, state follows what the
destination accepted, rejections wait and are retried."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx

from cdp_warehouse.sync.engine import jobs, sync
from tests.conftest import identify, track
from tests.fakes import Fault
from tests.sync.conftest import ACTIVE

EARLY, LATER = datetime(2026, 6, 5, tzinfo=UTC), datetime(2026, 7, 10, tzinfo=UTC)
WINDOWED = ACTIVE.replace("count: {event: Report}", "count: {event: Report, window: 7d}")


def members(*users: str, plan: str = "pro") -> list[dict]:
    messages = []
    for user in users:
        messages += [identify(user, "2026-06-01T00:00:00Z", plan=plan), track(user, "Report", "2026-06-02T00:00:00Z")]
    return messages


def track_bodies(braze) -> list[dict]:
    return [r.body for r in braze.requests if r.path == "/users/track"]


def test_first_sync_sends_every_member_and_a_second_sends_nothing(synced):
    s = synced()
    s.ws.land(*members("u1", "u2"), identify("u3", "2026-06-01T00:00:00Z", plan="free"))  # u3: no report
    s.ws.run()
    first = s.sync("active", to=("braze",))["braze"]
    assert (first.added, first.changed, first.removed, first.failed, first.status) == (2, 0, 0, 0, "success")
    assert s.braze.attributes(external_id="u1") == {"active": True, "plan": "pro", "reports": 1}
    assert s.braze.attributes(external_id="u3") is None
    assert set(s.state()) == {"u1", "u2"}

    sent = len(s.braze.requests)
    s.ws.run()
    second = s.sync("active", to=("braze",))["braze"]
    assert (second.added, second.changed, second.removed, second.requests) == (0, 0, 0, 0)
    assert len(s.braze.requests) == sent  # no request at all
    runs = s.ws.query("SELECT added, changed, removed, failed, status FROM cdp.sync_runs ORDER BY started_at")
    assert runs == [(2, 0, 0, 0, "success"), (0, 0, 0, 0, "success")]


def test_a_changed_trait_sends_only_that_attribute(synced):
    s = synced()
    s.ws.land(*members("u1", "u2"))
    s.ws.run()
    s.sync("active", to=("braze",))
    s.ws.land(track("u1", "Report", "2026-06-03T00:00:00Z"))
    s.ws.run()
    outcome = s.sync("active", to=("braze",))["braze"]
    assert (outcome.added, outcome.changed) == (0, 1)
    assert track_bodies(s.braze)[-1] == {"attributes": [{"external_id": "u1", "reports": 2}]}
    assert s.braze.attributes(external_id="u1") == {"active": True, "plan": "pro", "reports": 2}


def test_an_exit_under_mirror_clears_membership_and_leaves_fields(synced):
    s = synced(WINDOWED)
    s.ws.land(*members("u1", "u2"))
    s.ws.run(EARLY)
    s.sync("active", to=("braze",))
    s.ws.land(track("u1", "Report", "2026-07-05T00:00:00Z"))  # u2's report is now out of the window
    s.ws.run(LATER)
    outcome = s.sync("active", to=("braze",))["braze"]
    assert (outcome.removed, outcome.changed) == (1, 0)
    assert track_bodies(s.braze)[-1] == {"attributes": [{"external_id": "u2", "active": False}]}
    assert s.braze.attributes(external_id="u2") == {"active": False, "plan": "pro", "reports": 1}
    assert s.state()["u2"][0] is False
    # back in: entered again, membership true, and its changed count goes with it
    s.ws.land(track("u2", "Report", "2026-07-09T00:00:00Z"))
    s.ws.run(LATER)
    assert s.sync("active", to=("braze",))["braze"].added == 1
    assert s.braze.attributes(external_id="u2") == {"active": True, "plan": "pro", "reports": 1}


def test_upsert_never_removes(synced):
    s = synced(ACTIVE.replace("mode: mirror", "mode: upsert"))
    s.ws.land(*members("u1", "u2"))
    s.ws.run()
    s.sync("active", to=("braze",))
    s.ws.warehouse.execute("DELETE FROM cdp.audience_members WHERE profile_id = 'u2'")
    sent = len(s.braze.requests)
    outcome = s.sync("active", to=("braze",))["braze"]
    assert (outcome.removed, len(s.braze.requests)) == (0, sent)
    assert s.braze.attributes(external_id="u2")["active"] is True


def test_mirror_touches_only_people_this_engine_synced(synced):
    s = synced(WINDOWED)
    # a Braze user someone else tagged with the same attribute: never ours, never cleared
    httpx.post(f"{s.braze.url}/users/track", headers={"Authorization": f"Bearer {s.braze.api_key}"},
               json={"attributes": [{"external_id": "u9", "active": True}]}).raise_for_status()
    s.ws.land(*members("u1"))
    s.ws.run(EARLY)
    s.sync("active", to=("braze",))
    s.ws.run(LATER)  # everyone's report is out of the window
    assert s.sync("active", to=("braze",))["braze"].removed == 1
    assert [a["external_id"] for a in track_bodies(s.braze)[-1]["attributes"]] == ["u1"]
    assert s.braze.attributes(external_id="u9") == {"active": True}


def test_holdout_members_are_never_sent(synced):
    split = ACTIVE.replace('where: "reports >= 1"', 'where: "reports >= 1"\n    splits: {holdout: 50, treatment: 50}')
    s = synced(split)
    users = [f"u{i}" for i in range(40)]
    s.ws.land(*members(*users))
    s.ws.run()
    groups = dict(s.ws.query("SELECT profile_id, split FROM cdp.audience_members"))
    treatment = {p for p, g in groups.items() if g == "treatment"}
    assert 0 < len(treatment) < 40
    s.sync("active", to=("braze",))
    sent = {a["external_id"] for body in track_bodies(s.braze) for a in body["attributes"]}
    assert sent == treatment


def test_rejected_rows_are_kept_with_the_reason_and_retried_until_accepted(synced):
    s = synced()
    s.braze.reject(lambda obj: obj.get("external_id") == "u2")
    s.ws.land(*members("u1", "u2", "u3"))
    s.ws.run()
    first = s.sync("active", to=("braze",))["braze"]
    assert (first.added, first.failed, first.status) == (2, 1, "partial")
    reason, attempts = s.rejections()["u2"]
    assert "blacklisted" in reason and attempts == 1
    assert "u2" not in s.state()

    second = s.sync("active", to=("braze",))["braze"]
    assert (second.added, second.failed) == (0, 1)
    assert s.rejections()["u2"][1] == 2
    assert [a["external_id"] for a in track_bodies(s.braze)[-1]["attributes"]] == ["u2"]

    s.braze.clear_rejections()
    third = s.sync("active", to=("braze",))["braze"]
    assert (third.added, third.failed, third.status) == (1, 0, "success")
    assert s.rejections() == {}
    assert s.braze.attributes(external_id="u2")["active"] is True
    statuses = [r[0] for r in s.ws.query("SELECT status FROM cdp.sync_runs WHERE destination = 'braze' ORDER BY started_at")]
    assert statuses == ["partial", "partial", "success"]


def test_nulls_are_skipped_by_default_and_cleared_on_request(synced):
    for handling, expected in (("skip", {"external_id": "u1", "active": True, "reports": 1}),
                               ("clear", {"external_id": "u1", "active": True, "reports": 1, "plan": None})):
        yaml = ACTIVE.replace("mode: mirror", f"mode: mirror\n        null_handling: {handling}")
        s = synced(yaml)
        s.ws.land(track("u1", "Report", "2026-06-02T00:00:00Z"))  # no plan
        s.ws.run()
        s.sync("active", to=("braze",))
        assert track_bodies(s.braze)[-1] == {"attributes": [expected]}


def test_identify_by_email_sends_profiles_without_a_user_id(synced):
    yaml = ACTIVE.replace("mode: mirror", "mode: mirror\n        identify_by: email")
    s = synced(yaml)
    s.ws.land(*members("u1"),
              identify(None, "2026-06-01T00:00:00Z", anonymous="a1", email="Ann@X.io"),
              track(None, "Report", "2026-06-02T00:00:00Z", anonymous="a1"),
              track(None, "Report", "2026-06-02T00:00:00Z", anonymous="a2"))  # no email: skipped
    s.ws.run()
    assert s.sync("active", to=("braze",))["braze"].added == 2
    assert s.braze.attributes(email="ann@x.io")["active"] is True
    assert set(s.state()) == {"u1", "ann@x.io"}


def test_dry_run_calls_nothing_and_changes_no_state(synced):
    s = synced()
    s.ws.land(*members("u1", "u2"))
    s.ws.run()
    outcome = s.sync("active", to=("braze",), dry_run=True)["braze"]
    assert outcome.planned == {"added": 2}
    assert outcome.samples[0].body["attributes"][0] == {"external_id": "u1", "active": True, "plan": "pro", "reports": 1}
    assert s.braze.requests == [] and s.state() == {}
    assert s.ws.query("SELECT COUNT(*) FROM cdp.sync_runs") == [(0,)]


def test_full_resync_sends_everything_again(synced):
    s = synced()
    s.ws.land(*members("u1", "u2"))
    s.ws.run()
    s.sync("active", to=("braze",))
    outcome = s.sync("active", to=("braze",), full_resync=True)["braze"]
    assert outcome.added == 2
    assert track_bodies(s.braze)[-1]["attributes"][1] == {"external_id": "u2", "active": True, "plan": "pro",
                                                           "reports": 1}


def test_transient_errors_and_timeouts_are_retried(synced):
    s = synced()
    s.braze.inject(Fault(status=503), Fault(status=None, delay=3.0), Fault(status=502))
    s.ws.land(*members("u1", "u2"))
    s.ws.run()
    outcome = s.sync("active", to=("braze",))["braze"]
    assert (outcome.added, outcome.status, outcome.requests) == (2, "success", 4)
    assert s.braze.attributes(external_id="u2")["active"] is True


def test_bad_credentials_fail_the_run_and_mark_nothing(synced):
    s = synced()
    s.ws.land(*members("u1"))
    s.ws.run()
    project = s.ws.project
    environ = {**s.environ, "BRAZE_API_KEY": "wrong"}
    [outcome] = sync(project, s.ws.warehouse, jobs(project, ["active"], ["braze"]), environ=environ)
    assert outcome.status == "failed" and "401" in outcome.error and "api_key" in outcome.hint
    assert s.state() == {}
    assert s.ws.query("SELECT status, error FROM cdp.sync_runs")[0][0] == "failed"
    assert "wrong" not in json.dumps(s.ws.query("SELECT * FROM cdp.sync_runs"), default=str)


def test_a_missing_credential_names_the_variable_but_only_when_there_is_something_to_send(synced):
    s = synced()
    s.ws.run()  # nobody in the audience
    project = s.ws.project
    [empty] = sync(project, s.ws.warehouse, jobs(project, ["active"], ["braze"]), environ={})
    assert empty.status == "success"
    s.ws.land(*members("u1"))
    s.ws.run()
    [outcome] = sync(project, s.ws.warehouse, jobs(project, ["active"], ["braze"]), environ={})
    assert outcome.status == "failed" and "BRAZE_REST_ENDPOINT" in outcome.error


def test_array_membership_and_custom_events_follow_entries_and_exits(synced):
    yaml = WINDOWED.replace("membership: {attribute: active}", "membership: {array: audiences}\n        events: true")
    s = synced(yaml)
    s.ws.land(*members("u1", "u2"))
    s.ws.run(EARLY)
    s.sync("active", to=("braze",))
    assert s.braze.attributes(external_id="u1")["audiences"] == ["active"]
    s.ws.land(track("u1", "Report", "2026-07-05T00:00:00Z"))
    s.ws.run(LATER)
    s.sync("active", to=("braze",))
    assert s.braze.attributes(external_id="u2")["audiences"] == []
    assert s.braze.attributes(external_id="u1")["audiences"] == ["active"]
    assert [e["name"] for e in s.braze.events_of(external_id="u2")] == ["entered_audience", "exited_audience"]
    assert [e["name"] for e in s.braze.events_of(external_id="u1")] == ["entered_audience"]
    assert s.braze.events_of(external_id="u2")[0]["properties"] == {"audience": "active"}


def test_a_slow_destination_does_not_hold_the_others(synced):
    s = synced()
    s.braze.inject(Fault(status=None, delay=1.5))  # answers, but late
    s.ws.land(*members("u1"))
    s.ws.run()
    outcomes = s.sync("active", to=("braze", "slack"))
    assert outcomes["braze"].status == outcomes["slack"].status == "success"
    finished = dict(s.ws.query("SELECT destination, finished_at FROM cdp.sync_runs"))
    assert (finished["braze"] - finished["slack"]).total_seconds() > 1
