"""Salesforce: Contacts upserted by external id through sObject Collections, or a Bulk API
2.0 job for large runs; per-record errors wait in sync_rejections; the token is fetched only
when something is sent and again when it expires; the org's daily API allocation is spared."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from cdp_warehouse.specs import load_project
from cdp_warehouse.sync.engine import jobs, sync
from tests.conftest import identify, track
from tests.fakes import Fault
from tests.fakes.salesforce import FakeSalesforce, SObjectType
from tests.specs.test_validation import CDP_WITH_DESTINATIONS, MAIN
from tests.sync.conftest import ACTIVE, Synced, sync_entry_problem

WINDOWED = ACTIVE.replace("count: {event: Report}", "count: {event: Report, window: 7d}")
EARLY, LATER = datetime(2026, 6, 5, tzinfo=UTC), datetime(2026, 7, 10, tzinfo=UTC)
TYPES = {"Active__c": "boolean", "Reports__c": "double", "Last_Report__c": "datetime"}


def typed(**options) -> FakeSalesforce:
    """An org whose Contact fields have types, so CSV values are read as Salesforce would."""
    return FakeSalesforce(objects={"Contact": SObjectType("003", ("LastName",), TYPES)}, **options)


def members(*users: str, plan: str = "pro", at: str = "2026-06-02T00:00:00Z") -> list[dict]:
    messages = []
    for user in users:
        messages += [identify(user, "2026-06-01T00:00:00Z", plan=plan), track(user, "Report", at)]
    return messages


def users(count: int) -> list[str]:
    return [f"u{i:03d}" for i in range(count)]


def configure(s: Synced, **settings) -> None:
    """Add settings to the salesforce destination of cdp.yaml and load the project again."""
    path = s.ws.project.root / "cdp.yaml"
    lines = "".join(f"    {key}: {value}\n" for key, value in settings.items())
    path.write_text(path.read_text().replace("    timeout: 3\n", "    timeout: 3\n" + lines))
    s.ws.project = load_project(s.ws.project.root, environ={})


def api_calls(s: Synced, method: str | None = None) -> list:
    return [r for r in s.salesforce.requests
            if r.path.startswith("/services/data/") and (method is None or r.method == method)]


def sent_records(s: Synced) -> list[dict]:
    """The records of the last Collections request."""
    return [{k: v for k, v in r.items() if k != "attributes"} for r in api_calls(s, "PATCH")[-1].body["records"]]


def uploaded_csv(s: Synced) -> list[str]:
    return api_calls(s, "PUT")[-1].raw.decode().splitlines()


def contact(s: Synced, user: str) -> dict | None:
    found = s.salesforce.record("Contact", External_Id__c=user)
    return {k: v for k, v in found.items() if k != "Id"} if found else None


# ------------------------------------------------------------------------ Collections
def test_first_sync_upserts_contacts_by_external_id_in_one_collections_request(synced, caplog):
    s = synced()
    s.ws.land(*members("u1", "u2", "u3"))
    s.ws.run()
    with caplog.at_level(logging.DEBUG, logger="cdp_warehouse.sync.destinations.salesforce"):
        outcome = s.sync("active", to=("salesforce",))["salesforce"]
    assert (outcome.added, outcome.failed, outcome.status, outcome.requests) == (3, 0, "success", 2)  # token + 1
    [call] = api_calls(s)
    assert (call.method, call.path) == ("PATCH", "/services/data/v62.0/composite/sobjects/Contact/External_Id__c")
    assert call.body["allOrNone"] is False
    assert call.body["records"][0] == {"attributes": {"type": "Contact"}, "External_Id__c": "u1", "LastName": "u1",
                                       "Active__c": True, "Plan__c": "pro", "Reports__c": 1}
    assert contact(s, "u2") == {"External_Id__c": "u2", "LastName": "u2", "Active__c": True, "Plan__c": "pro",
                                "Reports__c": 1}
    assert set(s.state("salesforce")) == {"u1", "u2", "u3"}
    assert "api-usage=1/15000" in caplog.text  # logged, and no secret with it
    assert s.salesforce.client_secret not in caplog.text and "Bearer" not in caplog.text


def test_a_second_run_without_changes_sends_nothing_not_even_a_token_request(synced):
    s = synced()
    s.ws.land(*members("u1"))
    s.ws.run()
    s.sync("active", to=("salesforce",))
    before = len(s.salesforce.requests)
    s.ws.run()
    outcome = s.sync("active", to=("salesforce",))["salesforce"]
    assert (outcome.requests, len(s.salesforce.requests), s.salesforce.tokens_issued) == (0, before, 1)


def test_a_changed_trait_sends_only_that_field(synced):
    s = synced()
    s.ws.land(*members("u1", "u2"))
    s.ws.run()
    s.sync("active", to=("salesforce",))
    s.ws.land(track("u1", "Report", "2026-06-03T00:00:00Z"))
    s.ws.run()
    outcome = s.sync("active", to=("salesforce",))["salesforce"]
    assert (outcome.added, outcome.changed) == (0, 1)
    assert sent_records(s) == [{"External_Id__c": "u1", "Reports__c": 2}]
    assert contact(s, "u1")["Reports__c"] == 2 and contact(s, "u1")["Plan__c"] == "pro"


def test_an_exit_under_mirror_sets_in_audience_false_and_leaves_the_other_fields(synced):
    s = synced(WINDOWED)
    s.ws.land(*members("u1", "u2"))
    s.ws.run(EARLY)
    s.sync("active", to=("salesforce",))
    s.ws.land(track("u1", "Report", "2026-07-05T00:00:00Z"))  # u2's report is now out of the window
    s.ws.run(LATER)
    outcome = s.sync("active", to=("salesforce",))["salesforce"]
    assert (outcome.removed, outcome.changed) == (1, 0)
    assert sent_records(s) == [{"External_Id__c": "u2", "Active__c": False}]
    assert contact(s, "u2") == {"External_Id__c": "u2", "LastName": "u2", "Active__c": False, "Plan__c": "pro",
                                "Reports__c": 1}
    assert s.state("salesforce")["u2"][0] is False


def test_timestamps_go_in_salesforces_datetime_format(synced):
    yaml = ACTIVE.replace("  - name: reports\n", "  - name: last_report\n    last_seen: {event: Report}\n"
                                                 "  - name: reports\n")
    yaml = yaml.replace("Reports__c: reports}", "Reports__c: reports, Last_Report__c: last_report}")
    s = synced(yaml, salesforce=typed())
    s.ws.land(*members("u1", at="2026-06-02T08:30:00Z"))
    s.ws.run()
    assert s.sync("active", to=("salesforce",))["salesforce"].status == "success"
    assert sent_records(s)[0]["Last_Report__c"] == "2026-06-02T08:30:00.000+0000"
    assert contact(s, "u1")["Last_Report__c"] == "2026-06-02T08:30:00.000+0000"


def test_a_record_missing_a_required_field_is_rejected_and_retried_until_accepted(synced):
    yaml = ACTIVE.replace("  - name: reports\n", "  - name: last_name\n    trait: {trait: last_name}\n"
                                                 "  - name: reports\n")
    s = synced(yaml.replace("LastName: user_id", "LastName: last_name"))
    s.ws.land(*members("u1", "u2"), identify("u1", "2026-06-01T00:00:00Z", last_name="Doe"))
    s.ws.run()
    first = s.sync("active", to=("salesforce",))["salesforce"]
    assert (first.added, first.failed, first.status) == (1, 1, "partial")
    assert s.rejections() == {"u2": ("REQUIRED_FIELD_MISSING: Required fields are missing: [LastName]", 1)}
    assert contact(s, "u2") is None and "u2" not in s.state("salesforce")

    second = s.sync("active", to=("salesforce",))["salesforce"]
    assert (second.added, second.failed) == (0, 1) and s.rejections()["u2"][1] == 2

    s.ws.land(identify("u2", "2026-06-03T00:00:00Z", last_name="Roe"))
    s.ws.run()
    third = s.sync("active", to=("salesforce",))["salesforce"]
    assert (third.added, third.failed, third.status) == (1, 0, "success")
    assert s.rejections() == {} and contact(s, "u2")["LastName"] == "Roe"


# ------------------------------------------------------------------------------ tokens
def test_a_token_that_expires_mid_sync_is_fetched_again_and_the_sync_completes(synced):
    s = synced(salesforce=FakeSalesforce(token_ttl_requests=2))
    configure(s, concurrency=1)
    s.ws.land(*members(*users(450)))  # three Collections requests
    s.ws.run()
    outcome = s.sync("active", to=("salesforce",))["salesforce"]
    assert (outcome.added, outcome.status) == (450, "success")
    assert [r.status for r in api_calls(s)] == [200, 200, 401, 200]
    assert s.salesforce.tokens_issued == 2
    assert len(s.salesforce.records("Contact")) == 450


def test_a_new_token_that_is_refused_too_stops_the_run_without_looping(synced):
    s = synced()
    s.salesforce.inject(Fault(status=401, path="/services/data/v62.0/composite/sobjects/Contact/External_Id__c",
                              times=5))
    s.ws.land(*members("u1"))
    s.ws.run()
    outcome = s.sync("active", to=("salesforce",))["salesforce"]
    assert outcome.status == "failed" and "INVALID_SESSION_ID" in outcome.error
    assert (len(api_calls(s)), s.salesforce.tokens_issued) == (2, 2)
    assert s.state("salesforce") == {}


def test_bad_client_credentials_fail_the_run_without_leaking_the_secret(synced):
    s = synced(salesforce=FakeSalesforce(client_secret="the-real-secret"))
    s.ws.land(*members("u1"))
    s.ws.run()
    project = s.ws.project
    environ = {**s.environ, "SALESFORCE_CLIENT_SECRET": "a-wrong-secret"}
    [outcome] = sync(project, s.ws.warehouse, jobs(project, ["active"], ["salesforce"]), environ=environ)
    assert outcome.status == "failed" and "invalid_client" in outcome.error and "CLIENT_SECRET" in outcome.hint
    assert api_calls(s) == []
    logged = str(s.ws.query("SELECT * FROM cdp.sync_runs"))
    assert "a-wrong-secret" not in logged and "the-real-secret" not in logged


# -------------------------------------------------------------------------------- Bulk
def test_a_large_run_goes_through_one_bulk_job(synced):
    s = synced(salesforce=typed())
    configure(s, bulk_threshold=3)
    s.ws.land(*members("u1", "u2", "u3", "u4", "u5"))
    s.ws.run()
    outcome = s.sync("active", to=("salesforce",))["salesforce"]
    assert (outcome.added, outcome.status) == (5, "success")
    # create, upload, close, InProgress, JobComplete: every row processed, no result download
    assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in api_calls(s)] == [
        ("POST", "ingest"), ("PUT", "batches"), ("PATCH", api_calls(s)[0].response_body["id"]),
        ("GET", api_calls(s)[0].response_body["id"]), ("GET", api_calls(s)[0].response_body["id"])]
    assert api_calls(s, "POST")[0].body == {"object": "Contact", "operation": "upsert",
                                            "externalIdFieldName": "External_Id__c", "contentType": "CSV",
                                            "lineEnding": "LF"}
    assert uploaded_csv(s)[:2] == ["External_Id__c,LastName,Active__c,Plan__c,Reports__c", "u1,u1,true,pro,1"]
    assert contact(s, "u5") == {"External_Id__c": "u5", "LastName": "u5", "Active__c": True, "Plan__c": "pro",
                                "Reports__c": 1.0}
    assert set(s.state("salesforce")) == {"u1", "u2", "u3", "u4", "u5"}


def test_failed_bulk_rows_are_read_back_by_external_id_and_stay_pending(synced):
    s = synced(salesforce=typed())
    configure(s, bulk_threshold=3)
    s.salesforce.reject(lambda sobject, values: values.get("External_Id__c") in ("u2", "u4"))
    s.ws.land(*members("u1", "u2", "u3", "u4", "u5"))
    s.ws.run()
    outcome = s.sync("active", to=("salesforce",))["salesforce"]
    assert (outcome.added, outcome.failed, outcome.status) == (3, 2, "partial")
    assert set(s.state("salesforce")) == {"u1", "u3", "u5"}
    assert s.rejections() == {
        user: ("FIELD_CUSTOM_VALIDATION_EXCEPTION:Rejected by a validation rule: --", 1) for user in ("u2", "u4")}
    assert [r.path.rsplit("/", 1)[-1] for r in api_calls(s, "GET")][-2:] == ["successfulResults", "failedResults"]

    s.salesforce.clear_rejections()
    s.sync("active", to=("salesforce",))  # 2 rows: below the threshold, through Collections
    assert s.rejections() == {} and set(s.state("salesforce")) == {"u1", "u2", "u3", "u4", "u5"}


def test_a_bulk_job_that_ends_failed_leaves_all_its_rows_pending(synced):
    s = synced(salesforce=typed())
    configure(s, bulk_threshold=3)
    s.salesforce.fail_next_job("InvalidBatch : Failed to process query")
    s.ws.land(*members("u1", "u2", "u3"))
    s.ws.run()
    outcome = s.sync("active", to=("salesforce",))["salesforce"]
    assert (outcome.added, outcome.failed, outcome.status) == (0, 3, "partial")
    assert s.state("salesforce") == {} and s.salesforce.records("Contact") == {}
    reason, attempts = s.rejections()["u1"]
    assert reason.endswith("Failed: InvalidBatch : Failed to process query") and attempts == 1

    retry = s.sync("active", to=("salesforce",))["salesforce"]
    assert (retry.added, retry.status) == (3, "success") and s.rejections() == {}


def test_bulk_exits_and_cleared_values_use_csv_conventions(synced):
    yaml = WINDOWED.replace('mode: "mirror"', 'mode: "mirror"\n        null_handling: clear')
    s = synced(yaml, salesforce=typed())
    configure(s, bulk_threshold=2)
    s.ws.land(track("u1", "Report", "2026-06-02T00:00:00Z"), *members("u2", "u3"))  # u1 has no plan
    s.ws.run(EARLY)
    s.sync("active", to=("salesforce",))
    assert uploaded_csv(s)[1] == "u1,u1,true,#N/A,1"  # #N/A: set to null
    assert contact(s, "u1")["Plan__c"] is None
    s.ws.land(track("u3", "Report", "2026-07-05T00:00:00Z"))
    s.ws.run(LATER)  # u1 and u2 exit
    outcome = s.sync("active", to=("salesforce",))["salesforce"]
    assert outcome.removed == 2
    assert uploaded_csv(s) == ["External_Id__c,Active__c", "u1,false", "u2,false"]  # only membership changes
    assert contact(s, "u2") == {"External_Id__c": "u2", "LastName": "u2", "Active__c": False, "Plan__c": "pro",
                                "Reports__c": 1.0}


def test_dry_run_shows_the_bulk_job_and_calls_nothing(synced):
    s = synced()
    configure(s, bulk_threshold=2)
    s.ws.land(*members("u1", "u2"))
    s.ws.run()
    outcome = s.sync("active", to=("salesforce",), dry_run=True)["salesforce"]
    [sample] = outcome.samples
    assert (sample.method, sample.url) == ("POST", "/services/data/v62.0/jobs/ingest")
    assert sample.body["csv"].startswith("External_Id__c,LastName,Active__c,Plan__c,Reports__c\nu1,")
    assert s.salesforce.requests == []


# ------------------------------------------------------------------------ API allocation
def test_request_limit_exceeded_stops_the_run_at_once(synced):
    s = synced(salesforce=FakeSalesforce(api_limit=100, api_used=100))
    s.ws.land(*members("u1", "u2"))
    s.ws.run()
    outcome = s.sync("active", to=("salesforce",))["salesforce"]
    assert outcome.status == "failed" and "REQUEST_LIMIT_EXCEEDED" in outcome.error and "24 hours" in outcome.hint
    assert len(api_calls(s)) == 1  # not retried
    assert s.state("salesforce") == {}


def test_the_run_stops_when_api_usage_reaches_the_configured_share(synced):
    s = synced(salesforce=FakeSalesforce(api_limit=100, api_used=89))
    configure(s, concurrency=1)
    s.ws.land(*members(*users(600)))  # three Collections requests
    s.ws.run()
    outcome = s.sync("active", to=("salesforce",))["salesforce"]
    assert (outcome.status, outcome.added) == ("failed", 200)
    assert "api usage 90/100" in outcome.error.lower() and "stop_at_api_usage" in outcome.error
    assert len(api_calls(s)) == 1  # the answer to the first said 90%: nothing more was sent
    assert len(s.state("salesforce")) == 200

    s.salesforce.api_limit = 1000  # a new day
    again = s.sync("active", to=("salesforce",))["salesforce"]
    assert (again.status, again.added) == ("success", 400)
    assert len(s.salesforce.records("Contact")) == 600


# -------------------------------------------------------------------------- validation
CDP_WITH_SALESFORCE = CDP_WITH_DESTINATIONS + """\
  salesforce:
    type: salesforce
    instance_url: ${SALESFORCE_INSTANCE_URL}
    client_id: ${SALESFORCE_CLIENT_ID}
    client_secret: ${SALESFORCE_CLIENT_SECRET}
"""
VALID = "- to: salesforce\n  object: Contact\n  match: {External_Id__c: user_id}\n  fields: {Active__c: in_audience}"


@pytest.mark.parametrize(("entry", "key", "message"), [
    (VALID.replace("  object: Contact\n", ""), "object", "object: Contact"),
    (VALID.replace("{External_Id__c: user_id}", "{A__c: user_id, B__c: email}"), "match", "exactly one"),
    (VALID.replace("user_id}", "plan}"), "match", "map 'plan' in `fields` too"),
    (VALID.replace("user_id}", "in_audience}"), "match", "cannot identify a record"),
    (VALID.replace("{Active__c: in_audience}", "{Plan__c: plan}") + "\n  mode: mirror", "mode", "in_audience"),
    (VALID + "\n  membership: {tag: x}", "membership", "keeps membership in a field"),
    (VALID + "\n  identify_by: email", "identify_by", "remove `identify_by`"),
    (VALID + "\n  events: true", "events", "does not apply to salesforce"),
])
def test_a_salesforce_sync_it_cannot_do_is_an_error(tmp_path, entry, key, message):
    _, problem = sync_entry_problem(tmp_path, entry, CDP_WITH_SALESFORCE, key, plan_trait=True)
    assert problem.file == MAIN and message in problem.message
