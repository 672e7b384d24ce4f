"""The Intercom fake itself, exercised with httpx over real loopback HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakes import Fault
from tests.fakes.intercom import DEFAULT_TOKEN, FakeIntercom
from tests.fakes.server import Response

HEADERS = {"Authorization": f"Bearer {DEFAULT_TOKEN}", "Intercom-Version": "2.14"}


@pytest.fixture
def intercom() -> Iterator[FakeIntercom]:
    with FakeIntercom() as fake:
        yield fake
        assert fake.violations == []  # every request and answer followed the description


@pytest.fixture
def client(intercom: FakeIntercom) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=intercom.url, headers=HEADERS, timeout=5) as c:
        yield c


def create(client: httpx.Client, **body: Any) -> httpx.Response:
    return client.post("/contacts", json={"role": "user", **body})


def search(client: httpx.Client, query: dict[str, Any]) -> list[str]:
    response = client.post("/contacts/search", json={"query": query})
    assert response.status_code == 200
    return [c["external_id"] or c["email"] for c in response.json()["data"]]


def error(response: httpx.Response) -> tuple[str, str]:
    body = response.json()
    assert body["type"] == "error.list" and body["request_id"]
    return body["errors"][0]["code"], body["errors"][0]["message"]


# ------------------------------------------------------------------------------- auth
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": DEFAULT_TOKEN}])
def test_a_missing_or_wrong_token_is_401_without_rate_limit_headers(intercom: FakeIntercom, headers: dict) -> None:
    response = httpx.post(f"{intercom.url}/contacts", headers={"Intercom-Version": "2.14", **headers},
                          json={"external_id": "u1"})
    assert response.status_code == 401
    assert error(response) == ("unauthorized", "Access Token Invalid")
    assert "x-ratelimit-remaining" not in response.headers
    assert intercom.contacts == []


def test_only_version_2_14_is_spoken(intercom: FakeIntercom) -> None:
    response = httpx.get(f"{intercom.url}/tags", headers={**HEADERS, "Intercom-Version": "2.11"})
    assert response.status_code == 400 and error(response)[0] == "intercom_version_invalid"


# ------------------------------------------------------------------------- the description
def test_a_request_off_the_openapi_description_is_refused_and_recorded() -> None:
    with FakeIntercom() as intercom, httpx.Client(base_url=intercom.url, headers=HEADERS) as client:
        response = client.post("/contacts", json={"phone": "+353871234567"})  # none of email, external_id, role
        assert response.status_code == 400 and error(response)[0] == "parameter_invalid"
        assert client.post("/contacts/u1/tags", json={"tag": "x"}).status_code == 400  # `id` is required
        assert client.get("/users").status_code == 404
        assert [v.split(":")[0] for v in intercom.violations] == ["POST /contacts", "POST /contacts/u1/tags",
                                                                  "GET /users"]
        assert intercom.contacts == []


def test_an_answer_off_the_description_becomes_a_500_and_a_violation() -> None:
    class Broken(FakeIntercom):
        def _list_tags(self, body, query):  # a bug in the fake: tag ids are strings
            return Response(200, {"type": "list", "data": [{"type": "tag", "id": 7, "name": "x"}]})

    with Broken() as broken:
        response = httpx.get(f"{broken.url}/tags", headers=HEADERS)
        assert response.status_code == 500
        assert broken.violations and broken.violations[0].startswith("GET /tags: answer 200")


def test_the_description_is_loaded_once_per_process() -> None:
    assert FakeIntercom()._checker.api is FakeIntercom()._checker.api


# ------------------------------------------------------------------------------- contacts
def test_create_answers_the_contact_and_a_duplicate_external_id_is_a_conflict_naming_it(
        intercom: FakeIntercom, client: httpx.Client) -> None:
    first = create(client, external_id="u1", email="a@x.io")
    assert first.status_code == 200
    contact = first.json()
    assert (contact["type"], contact["role"], contact["external_id"], contact["email"]) == ("contact", "user", "u1", "a@x.io")
    again = create(client, external_id="u1")
    assert again.status_code == 409
    assert error(again) == ("conflict", f"A contact matching those details already exists with id={contact['id']}")
    # without an external id, a user's email is what makes the duplicate
    create(client, email="b@x.io")
    assert error(create(client, email="B@x.io"))[0] == "conflict"
    assert create(client, email="b@x.io", role="lead").status_code == 200
    assert len(intercom.contacts) == 3


def test_an_archived_contact_conflicts_with_its_own_message(intercom: FakeIntercom, client: httpx.Client) -> None:
    intercom.archive(intercom.add_contact(external_id="u1"))
    code, message = error(create(client, external_id="u1"))
    assert code == "conflict" and message.startswith("An archived contact matching those details")
    assert search(client, {"field": "external_id", "operator": "=", "value": "u1"}) == []


def test_update_and_get_a_contact_and_unknown_ids_are_not_found(intercom: FakeIntercom, client: httpx.Client) -> None:
    intercom.add_data_attribute("plan", "string")
    contact_id = create(client, external_id="u1").json()["id"]
    updated = client.put(f"/contacts/{contact_id}", json={"email": "new@x.io", "custom_attributes": {"plan": "pro"}})
    assert updated.status_code == 200 and updated.json()["custom_attributes"] == {"plan": "pro"}
    assert client.get(f"/contacts/{contact_id}").json()["email"] == "new@x.io"
    assert client.put(f"/contacts/{contact_id}", json={"custom_attributes": {"plan": None}}).json()["custom_attributes"] == {}
    missing = client.put("/contacts/nope", json={"custom_attributes": {}})
    assert missing.status_code == 404 and error(missing) == ("not_found", "User Not Found")


def test_an_invalid_email_is_refused(client: httpx.Client) -> None:
    response = create(client, external_id="u1", email="not-an-email")
    assert response.status_code == 400 and error(response) == ("parameter_invalid", "Email is invalid")


def test_rejections_refuse_matching_contacts_until_cleared(intercom: FakeIntercom, client: httpx.Client) -> None:
    intercom.reject(lambda c: c.external_id == "u2", "Blocked")
    assert error(create(client, external_id="u2")) == ("parameter_invalid", "Blocked")
    assert create(client, external_id="u1").status_code == 200
    intercom.clear_rejections()
    assert create(client, external_id="u2").status_code == 200


# ------------------------------------------------------------------------------- search
def test_search_by_external_id_email_and_role(intercom: FakeIntercom, client: httpx.Client) -> None:
    intercom.add_contact(external_id="u1", email="a@x.io")
    intercom.add_contact(email="A@X.io", role="lead")
    assert search(client, {"field": "external_id", "operator": "=", "value": "u1"}) == ["u1"]
    assert search(client, {"field": "email", "operator": "=", "value": "a@x.io"}) == ["u1", "A@X.io"]
    both = {"operator": "AND", "value": [{"field": "email", "operator": "=", "value": "a@x.io"},
                                         {"field": "role", "operator": "=", "value": "lead"}]}
    assert search(client, both) == ["A@X.io"]
    assert search(client, {"field": "external_id", "operator": "IN", "value": ["u1", "u9"]}) == ["u1"]


def test_a_new_contact_is_missed_by_its_first_searches() -> None:
    with FakeIntercom(search_misses=2) as intercom, httpx.Client(base_url=intercom.url, headers=HEADERS) as client:
        create(client, external_id="u1")
        query = {"field": "external_id", "operator": "=", "value": "u1"}
        assert [search(client, query) for _ in range(3)] == [[], [], ["u1"]]
        assert intercom.violations == []


def test_a_new_contact_is_searchable_only_after_the_delay() -> None:
    with FakeIntercom(search_delay=0.5) as intercom, httpx.Client(base_url=intercom.url, headers=HEADERS) as client:
        create(client, external_id="u1")
        query = {"field": "external_id", "operator": "=", "value": "u1"}
        assert search(client, query) == []
        time.sleep(0.6)
        assert search(client, query) == ["u1"]
        create(client, external_id="u2")
        intercom.settle()  # search catches up at once
        assert search(client, {"field": "external_id", "operator": "=", "value": "u2"}) == ["u2"]


# ------------------------------------------------------------------------- custom attributes
def test_custom_attributes_must_exist_and_hold_their_type(intercom: FakeIntercom, client: httpx.Client) -> None:
    unknown = create(client, external_id="u1", custom_attributes={"plan": "pro"})
    assert unknown.status_code == 400
    assert error(unknown) == ("parameter_invalid", "Custom attribute 'plan' does not exist")
    for name, kind in (("plan", "string"), ("reports", "integer"), ("spend", "float"), ("beta", "boolean"),
                       ("seen", "datetime")):
        assert client.post("/data_attributes", json={"name": name, "model": "contact", "data_type": kind}).status_code == 200
    good = {"plan": "pro", "reports": 3, "spend": 2, "beta": False, "seen": 1780358400}
    assert create(client, external_id="u1", custom_attributes=good).status_code == 200
    for bad in ({"reports": 2.5}, {"reports": True}, {"beta": "yes"}, {"seen": "2026-06-02"}, {"plan": 3}):
        response = create(client, external_id="u2", custom_attributes=bad)
        assert response.status_code == 400 and "should be of type" in error(response)[1], bad
    assert intercom.contact(external_id="u1").custom_attributes == good


def test_data_attributes_are_listed_created_once_and_datetime_shows_as_date(intercom: FakeIntercom,
                                                                            client: httpx.Client) -> None:
    made = client.post("/data_attributes", json={"name": "first_seen_at", "model": "contact", "data_type": "datetime"})
    assert made.status_code == 200 and made.json()["data_type"] == "date"
    assert made.json()["full_name"] == "custom_attributes.first_seen_at"
    listed = client.get("/data_attributes", params={"model": "contact"}).json()["data"]
    assert {a["name"] for a in listed if a["custom"]} == {"first_seen_at"}
    assert "email" in {a["name"] for a in listed if not a["custom"]}
    for name in ("first_seen_at", "email"):
        taken = client.post("/data_attributes", json={"name": name, "model": "contact", "data_type": "string"})
        assert taken.status_code == 400 and error(taken)[1].startswith(f"You already have '{name}'")
    invalid = client.post("/data_attributes", json={"name": "a.b", "model": "contact", "data_type": "string"})
    assert invalid.status_code == 400 and "alphanumeric" in error(invalid)[1]
    assert intercom.data_attributes == {"first_seen_at": "datetime"}


# ------------------------------------------------------------------------------- tags
def test_tags_are_found_by_name_applied_and_removed(intercom: FakeIntercom, client: httpx.Client) -> None:
    tag = client.post("/tags", json={"name": "Churn Risk"}).json()
    assert tag == {"type": "tag", "id": tag["id"], "name": "Churn Risk"}
    assert client.post("/tags", json={"name": "churn risk"}).json()["id"] == tag["id"]  # names are case-insensitive
    contact_id = create(client, external_id="u1").json()["id"]
    for _ in range(2):  # tagging twice is harmless
        applied = client.post(f"/contacts/{contact_id}/tags", json={"id": tag["id"]})
        assert applied.status_code == 200 and applied.json()["applied_by"]["type"] == "admin"
    assert intercom.tag_names(external_id="u1") == {"Churn Risk"}
    assert client.get(f"/contacts/{contact_id}").json()["tags"]["total_count"] == 1
    assert client.delete(f"/contacts/{contact_id}/tags/{tag['id']}").status_code == 200
    assert error(client.delete(f"/contacts/{contact_id}/tags/{tag['id']}")) == ("not_found", "Resource Not Found")
    assert error(client.post("/contacts/nope/tags", json={"id": tag["id"]})) == ("not_found", "User Not Found")
    assert error(client.post(f"/contacts/{contact_id}/tags", json={"id": "999"})) == ("not_found", "Resource Not Found")
    assert intercom.tag_names(external_id="u1") == set()


# ------------------------------------------------------------------------------- rate limit
def test_rate_limit_headers_count_down_per_window_then_429() -> None:
    with FakeIntercom(rate_limit=3, window_seconds=2.0) as intercom:
        # start at the beginning of a window, so that four requests fall into one
        time.sleep(2.0 - time.time() % 2.0 + 0.01)
        answers = [httpx.get(f"{intercom.url}/tags", headers=HEADERS) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert [a.headers["x-ratelimit-remaining"] for a in answers] == ["2", "1", "0", "0"]
        assert {a.headers["x-ratelimit-limit"] for a in answers} == {"3"}
        reset = int(answers[0].headers["x-ratelimit-reset"])
        assert reset % 2 == 0 and 0 < reset - time.time() <= 2  # the window's end, on the clock's grid
        assert error(answers[3]) == ("rate_limit_exceeded", "Exceeded rate limit of 3 in 2_seconds")
        time.sleep(reset - time.time() + 0.05)
        assert httpx.get(f"{intercom.url}/tags", headers=HEADERS).status_code == 200
        assert intercom.throttled == 1


def test_default_rate_limit_is_intercoms_10000_per_minute_in_10_second_windows(client: httpx.Client) -> None:
    response = client.get("/tags")
    assert response.headers["x-ratelimit-limit"] == "1666"


# ------------------------------------------------------------------------------- faults
def test_injected_faults_answer_with_intercoms_error_bodies(intercom: FakeIntercom, client: httpx.Client) -> None:
    intercom.inject(Fault(status=503), Fault(status=429, headers={"X-RateLimit-Reset": "1"}))
    unavailable = client.get("/tags")
    assert unavailable.status_code == 503 and error(unavailable)[0] == "server_error"
    throttled = client.get("/tags")
    assert throttled.status_code == 429 and error(throttled)[0] == "rate_limit_exceeded"
    assert throttled.headers["x-ratelimit-reset"] == "1" and throttled.headers["x-ratelimit-remaining"] == "0"
    assert client.get("/tags").status_code == 200
