"""The Salesforce fake itself, exercised with httpx over real loopback HTTP."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from tests.fakes import Fault
from tests.fakes.salesforce import (
    JWT_BEARER,
    JWT_USER,
    ConnectedAppKey,
    FakeSalesforce,
    SObjectType,
)

API = "/services/data/v62.0"
UPSERT = f"{API}/composite/sobjects/Contact/External_Id__c"
TYPED = {"Contact": SObjectType("003", ("LastName",), {"Active__c": "boolean", "Reports__c": "double",
                                                         "Seen__c": "datetime"})}


@pytest.fixture
def sf() -> Iterator[FakeSalesforce]:
    with FakeSalesforce(objects=TYPED) as fake:
        yield fake


def token(sf: FakeSalesforce, **form: str) -> httpx.Response:
    data = {"grant_type": "client_credentials", "client_id": sf.client_id, "client_secret": sf.client_secret, **form}
    return httpx.post(f"{sf.url}/services/oauth2/token", data=data)


@pytest.fixture
def client(sf: FakeSalesforce) -> Iterator[httpx.Client]:
    access = token(sf).json()["access_token"]
    with httpx.Client(base_url=sf.url, headers={"Authorization": f"Bearer {access}"}, timeout=5) as c:
        yield c


def contact(external_id: str, **values) -> dict:
    return {"attributes": {"type": "Contact"}, "External_Id__c": external_id, **values}


def upsert(client: httpx.Client, *records: dict, all_or_none: bool = False) -> httpx.Response:
    return client.patch(UPSERT, json={"allOrNone": all_or_none, "records": list(records)})


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


# ------------------------------------------------------------------------------- OAuth
def test_client_credentials_give_a_bearer_token_for_the_instance(sf):
    body = token(sf).json()
    assert body["token_type"] == "Bearer" and body["instance_url"] == sf.url and body["access_token"]
    assert sf.tokens_issued == 1


@pytest.mark.parametrize(("form", "error"), [
    ({"client_secret": "wrong"}, "invalid_client"),
    ({"client_id": "someone-else"}, "invalid_client"),
    ({"grant_type": "password"}, "unsupported_grant_type"),
])
def test_bad_token_requests_are_400_with_an_oauth_error(sf, form, error):
    response = token(sf, **form)
    assert response.status_code == 400 and response.json()["error"] == error
    assert "sforce-limit-info" not in response.headers  # not an API call


def test_a_connected_app_without_the_flow_answers_invalid_grant():
    with FakeSalesforce(client_credentials_enabled=False) as sf:
        assert token(sf).json() == {"error": "invalid_grant", "error_description": "no client credentials user enabled"}


def test_calls_without_a_valid_token_are_401_invalid_session_id(sf):
    response = httpx.patch(f"{sf.url}{UPSERT}", headers={"Authorization": "Bearer nope"}, json={"records": []})
    assert response.status_code == 401
    assert response.json() == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    assert sf.api_used == 0


def test_tokens_expire_after_n_calls_or_on_demand():
    with FakeSalesforce(token_ttl_requests=2) as sf:
        headers = {"Authorization": f"Bearer {token(sf).json()['access_token']}"}
        statuses = [httpx.get(f"{sf.url}{API}/limits", headers=headers).status_code for _ in range(3)]
        assert statuses == [200, 200, 401]
        headers = {"Authorization": f"Bearer {token(sf).json()['access_token']}"}
        assert httpx.get(f"{sf.url}{API}/limits", headers=headers).status_code == 200
        sf.expire_tokens()
        assert httpx.get(f"{sf.url}{API}/limits", headers=headers).status_code == 401


# ------------------------------------------------------------------------- JWT bearer
def assertion(sf: FakeSalesforce, key: ConnectedAppKey, headers: dict | None = None, **claims) -> str:
    values = {"iss": sf.client_id, "sub": JWT_USER, "aud": sf.login_url, "exp": int(time.time()) + 120, **claims}
    return jwt.encode({k: v for k, v in values.items() if v is not None}, key.private_key, algorithm="RS256",
                      headers=headers or {"typ": None})


def jwt_token(sf: FakeSalesforce, signed: str) -> httpx.Response:
    return httpx.post(f"{sf.url}/services/oauth2/token", data={"grant_type": JWT_BEARER, "assertion": signed})


def test_a_valid_assertion_gets_a_bearer_token_in_salesforces_shape(app_key):
    with FakeSalesforce(jwt_certificate=app_key.certificate) as sf:
        response = jwt_token(sf, assertion(sf, app_key))
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"access_token", "scope", "instance_url", "id", "token_type"}  # no refresh token
        assert (body["token_type"], body["instance_url"]) == ("Bearer", sf.url)
        api = httpx.get(f"{sf.url}{API}/limits", headers={"Authorization": f"Bearer {body['access_token']}"})
        assert api.status_code == 200 and sf.tokens_issued == 1
        assert "sforce-limit-info" not in response.headers  # not an API call


def test_the_connected_app_may_hold_a_public_key_instead_of_a_certificate(app_key):
    public = app_key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with FakeSalesforce(jwt_certificate=public) as sf:
        assert jwt_token(sf, assertion(sf, app_key)).status_code == 200


@pytest.mark.parametrize(("make", "error", "description"), [
    (lambda sf, key, other: assertion(sf, other), "invalid_grant", "invalid assertion"),  # not the uploaded key
    (lambda sf, key, other: assertion(sf, key, iss="3MVGsomeone-else"), "invalid_client_id",
     "client identifier invalid"),
    (lambda sf, key, other: assertion(sf, key, aud="https://test.salesforce.com"), "invalid_grant",
     "audience is invalid"),
    (lambda sf, key, other: assertion(sf, key, aud=[sf.login_url]), "invalid_grant", "audience is invalid"),
    (lambda sf, key, other: assertion(sf, key, sub="nobody@acme.example"), "invalid_grant",
     "user hasn't approved this consumer"),
    (lambda sf, key, other: assertion(sf, key, exp=int(time.time()) - 5), "invalid_grant",
     "expired authorization code"),
    (lambda sf, key, other: assertion(sf, key, exp=int(time.time()) + 3600), "invalid_grant", "invalid assertion"),
    (lambda sf, key, other: assertion(sf, key, exp=None), "invalid_grant", "invalid assertion"),
    (lambda sf, key, other: jwt.encode({"iss": sf.client_id, "sub": JWT_USER, "aud": sf.login_url,
                                        "exp": int(time.time()) + 60}, "a-shared-secret-of-32-bytes-or-more!",
                                       algorithm="HS256"), "invalid_grant", "invalid assertion"),
    (lambda sf, key, other: assertion(sf, key)[:-12], "invalid_grant", "invalid assertion"),  # signature cut
    (lambda sf, key, other: "not-a-jwt", "invalid_grant", "invalid assertion"),
])
def test_refused_assertions_get_salesforces_400_errors(app_key, other_key, make, error, description):
    with FakeSalesforce(jwt_certificate=app_key.certificate) as sf:
        response = jwt_token(sf, make(sf, app_key, other_key))
        assert response.status_code == 400
        assert response.json() == {"error": error, "error_description": description}
        assert sf.tokens_issued == 0


def test_the_claims_follow_salesforces_rules(app_key):
    with FakeSalesforce(jwt_certificate=app_key.certificate, jwt_users=("a@acme.example", "b@acme.example"),
                        jwt_audience="https://login.salesforce.com") as sf:
        assert sf.login_url == "https://login.salesforce.com"
        assert jwt_token(sf, assertion(sf, app_key, sub="b@acme.example")).status_code == 200
        # prn wins over sub; exp may be a string of digits (Salesforce's own example)
        assert jwt_token(sf, assertion(sf, app_key, sub="b@acme.example", prn="c@acme.example")).status_code == 400
        assert jwt_token(sf, assertion(sf, app_key, exp=str(int(time.time()) + 60))).status_code == 400  # sub JWT_USER
        assert jwt_token(sf, assertion(sf, app_key, sub="a@acme.example",
                                       exp=str(int(time.time()) + 60))).status_code == 200
        assert len(sf.assertions()) == 4


def test_without_a_certificate_no_assertion_is_accepted(app_key):
    with FakeSalesforce() as sf:
        assert jwt_token(sf, assertion(sf, app_key)).json()["error_description"] == "invalid assertion"


# ------------------------------------------------------------------------ API allocation
def test_every_api_answer_says_the_usage_and_an_exhausted_allocation_is_403():
    with FakeSalesforce(api_limit=3, api_used=1) as sf:
        headers = {"Authorization": f"Bearer {token(sf).json()['access_token']}"}
        first = httpx.get(f"{sf.url}{API}/limits", headers=headers)
        assert first.headers["sforce-limit-info"] == "api-usage=2/3"
        assert httpx.get(f"{sf.url}{API}/limits", headers=headers).headers["sforce-limit-info"] == "api-usage=3/3"
        refused = httpx.get(f"{sf.url}{API}/limits", headers=headers)
        assert refused.status_code == 403
        assert refused.json() == [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
        assert refused.headers["sforce-limit-info"] == "api-usage=3/3" and sf.api_used == 3


def test_injected_faults_carry_salesforce_bodies_and_the_usage_header(sf, client):
    sf.inject(Fault(status=503))
    response = client.get(f"{API}/limits")
    assert response.status_code == 503 and response.json()[0]["errorCode"] == "SERVER_UNAVAILABLE"
    assert response.headers["sforce-limit-info"].startswith("api-usage=")


# --------------------------------------------------------------------------- Collections
def test_collections_upsert_creates_then_updates_by_external_id(sf, client):
    first = upsert(client, contact("u1", LastName="Doe", Active__c=True), contact("u2", LastName="Roe"))
    assert first.status_code == 200
    [one, two] = first.json()
    assert (one["success"], one["created"], one["errors"]) == (True, True, [])
    assert one["id"].startswith("003") and len(one["id"]) == 18
    second = upsert(client, contact("u1", Reports__c=3)).json()
    assert second == [{"id": one["id"], "success": True, "errors": [], "created": False}]
    assert sf.record("Contact", External_Id__c="u1") == {
        "Id": one["id"], "External_Id__c": "u1", "LastName": "Doe", "Active__c": True, "Reports__c": 3}
    assert set(sf.records("Contact")) == {one["id"], two["id"]}


def test_a_record_created_without_required_fields_fails_alone(sf, client):
    results = upsert(client, contact("u1", Active__c=True), contact("u2", LastName="Roe")).json()
    assert results[0] == {"id": None, "success": False, "created": False, "errors": [
        {"statusCode": "REQUIRED_FIELD_MISSING", "message": "Required fields are missing: [LastName]",
         "fields": ["LastName"]}]}
    assert results[1]["success"] is True
    assert sf.record("Contact", External_Id__c="u1") is None


def test_all_or_none_rolls_back_the_whole_request(sf, client):
    results = upsert(client, contact("u1", LastName="Doe"), contact("u2"), all_or_none=True).json()
    assert [r["errors"][0]["statusCode"] for r in results] == ["ALL_OR_NONE_OPERATION_ROLLED_BACK",
                                                                 "REQUIRED_FIELD_MISSING"]
    assert sf.records("Contact") == {}


def test_more_than_200_records_is_400_and_nothing_is_written(sf, client):
    response = upsert(client, *(contact(f"u{i}", LastName="X") for i in range(201)))
    assert response.status_code == 400 and response.json()[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    assert sf.records("Contact") == {}
    assert upsert(client, *(contact(f"u{i}", LastName="X") for i in range(200))).status_code == 200


def test_values_must_have_the_fields_type(sf, client):
    response = upsert(client, contact("u1", LastName="Doe", Active__c="true"))
    assert response.status_code == 400 and response.json()[0]["errorCode"] == "JSON_PARSER_ERROR"
    upsert(client, contact("u1", LastName="Doe", Seen__c="2026-06-01T02:00:00+02:00"))
    assert sf.record("Contact", External_Id__c="u1")["Seen__c"] == "2026-06-01T00:00:00.000+0000"


def test_rejections_and_unknown_objects(sf, client):
    sf.reject(lambda sobject, values: values.get("External_Id__c") == "u2", "UNABLE_TO_LOCK_ROW", "unable to lock")
    results = upsert(client, contact("u1", LastName="A"), contact("u2", LastName="B")).json()
    assert [r["success"] for r in results] == [True, False]
    assert results[1]["errors"][0] == {"statusCode": "UNABLE_TO_LOCK_ROW", "message": "unable to lock", "fields": []}
    assert client.patch(f"{API}/composite/sobjects/Nope/Ext__c", json={"records": []}).status_code == 404
    custom = client.patch(f"{API}/composite/sobjects/Member__c/Ext__c", json={"records": [
        {"attributes": {"type": "Member__c"}, "Ext__c": "m1"}]})
    assert custom.json()[0]["success"] is True


# ------------------------------------------------------------------------------ Bulk 2.0
def run_job(client: httpx.Client, text: str, line_ending: str = "LF") -> tuple[str, list[str]]:
    """Create, upload, close and poll a job; (job id, the states seen)."""
    job = client.post(f"{API}/jobs/ingest", json={"object": "Contact", "operation": "upsert",
                                                  "externalIdFieldName": "External_Id__c",
                                                  "contentType": "CSV", "lineEnding": line_ending}).json()
    states = [job["state"]]
    assert client.put(f"{API}/jobs/ingest/{job['id']}/batches", content=text.encode(),
                      headers={"Content-Type": "text/csv"}).status_code == 201
    states.append(client.patch(f"{API}/jobs/ingest/{job['id']}", json={"state": "UploadComplete"}).json()["state"])
    while states[-1] not in ("JobComplete", "Failed", "Aborted"):
        states.append(client.get(f"{API}/jobs/ingest/{job['id']}").json()["state"])
    return job["id"], states


def test_a_bulk_job_goes_through_its_states_and_reports_results_as_csv(sf, client):
    upsert(client, contact("u1", LastName="Doe", Reports__c=1, Active__c=True))
    text = ("External_Id__c,LastName,Active__c,Reports__c\n"
            "u1,,false,#N/A\n"      # empty: unchanged; #N/A: null
            "u2,Roe,true,2.5\n"
            "u3,,true,\n"           # created without LastName: fails
            "u4,Poe,maybe,1\n")     # not a boolean: fails
    job_id, states = run_job(client, text)
    assert states == ["Open", "UploadComplete", "InProgress", "JobComplete"]
    info = client.get(f"{API}/jobs/ingest/{job_id}").json()
    assert (info["numberRecordsProcessed"], info["numberRecordsFailed"]) == (4, 2)
    assert sf.record("Contact", External_Id__c="u1") | {"Id": ""} == {
        "Id": "", "External_Id__c": "u1", "LastName": "Doe", "Active__c": False, "Reports__c": None}
    assert sf.record("Contact", External_Id__c="u2")["Reports__c"] == 2.5

    successful = client.get(f"{API}/jobs/ingest/{job_id}/successfulResults/")
    assert successful.headers["content-type"] == "text/csv"
    assert successful.text.splitlines()[0] == '"sf__Id","sf__Created","External_Id__c","LastName","Active__c","Reports__c"'
    assert [(r["External_Id__c"], r["sf__Created"]) for r in rows(successful.text)] == [("u2", "true"), ("u1", "false")]
    failed = rows(client.get(f"{API}/jobs/ingest/{job_id}/failedResults/").text)
    assert {r["External_Id__c"]: r["sf__Error"] for r in failed} == {
        "u3": "REQUIRED_FIELD_MISSING:Required fields are missing: [LastName]:LastName --",
        "u4": "INVALID_TYPE_ON_FIELD_IN_RECORD:Active__c: value not of required type: maybe:Active__c --"}
    assert rows(client.get(f"{API}/jobs/ingest/{job_id}/unprocessedrecords/").text) == []


def test_a_failed_job_applies_nothing_and_leaves_every_row_unprocessed(sf, client):
    sf.fail_next_job("InvalidBatch : Failed to process query")
    job_id, states = run_job(client, "External_Id__c,LastName\nu1,Doe\nu2,Roe\n")
    assert states[-1] == "Failed"
    assert client.get(f"{API}/jobs/ingest/{job_id}").json()["errorMessage"] == "InvalidBatch : Failed to process query"
    assert sf.records("Contact") == {}
    unprocessed = rows(client.get(f"{API}/jobs/ingest/{job_id}/unprocessedrecords").text)
    assert sorted(r["External_Id__c"] for r in unprocessed) == ["u1", "u2"]
    _, states = run_job(client, "External_Id__c,LastName\nu1,Doe\n")  # only the next job failed
    assert states[-1] == "JobComplete"


def test_jobs_fail_on_a_wrong_line_ending_or_a_missing_external_id_column(sf, client):
    job_id, states = run_job(client, "External_Id__c,LastName\r\nu1,Doe\r\n")
    assert states[-1] == "Failed" and "LineEnding" in client.get(f"{API}/jobs/ingest/{job_id}").json()["errorMessage"]
    job_id, states = run_job(client, "LastName\nDoe\n")
    assert client.get(f"{API}/jobs/ingest/{job_id}").json()["errorMessage"] == \
        "InvalidBatch : Field name not found : External_Id__c"


def test_job_rules_one_upload_and_results_only_when_done(sf, client):
    job = client.post(f"{API}/jobs/ingest", json={"object": "Contact", "operation": "upsert",
                                                  "externalIdFieldName": "External_Id__c"}).json()
    url = f"{API}/jobs/ingest/{job['id']}"
    assert client.get(f"{url}/successfulResults").status_code == 409
    assert client.put(f"{url}/batches", content=b"External_Id__c\nu1\n").status_code == 201
    assert client.put(f"{url}/batches", content=b"External_Id__c\nu2\n").status_code == 409
    assert client.patch(url, json={"state": "Aborted"}).json()["state"] == "Aborted"
    assert client.patch(url, json={"state": "UploadComplete"}).status_code == 400
    assert client.post(f"{API}/jobs/ingest", json={"object": "Contact", "operation": "upsert"}).status_code == 400
