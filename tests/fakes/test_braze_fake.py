"""The Braze fake itself, exercised with httpx over real loopback HTTP."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakes import FakeBraze, Fault

KEY = "test-braze-key"


@pytest.fixture
def braze() -> Iterator[FakeBraze]:
    with FakeBraze() as fake:
        yield fake


@pytest.fixture
def client(braze: FakeBraze) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=braze.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=5
    ) as c:
        yield c


def track(client: httpx.Client, **arrays: list[Any]) -> httpx.Response:
    return client.post("/users/track", json=arrays)


# ------------------------------------------------------------------------------- auth
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}])
def test_a_missing_or_wrong_key_is_401_with_brazes_body(braze: FakeBraze, headers: dict) -> None:
    response = httpx.post(
        f"{braze.url}/users/track",
        headers=headers,
        json={"attributes": [{"external_id": "u1", "plan": "pro"}]},
    )
    assert response.status_code == 401
    assert response.json() == {"message": "Invalid API Key"}
    assert "x-ratelimit-remaining" in response.headers
    assert braze.attributes(external_id="u1") is None


# -------------------------------------------------------------------------- success shape
def test_success_is_201_with_processed_counts_per_array_sent(client: httpx.Client) -> None:
    response = track(
        client,
        attributes=[{"external_id": "u1", "plan": "pro"}, {"external_id": "u2", "plan": "free"}],
        events=[
            {"external_id": "u1", "name": "churn_risk_entered", "time": "2026-06-30T00:00:00Z"}
        ],
    )
    assert response.status_code == 201
    assert response.json() == {
        "message": "success",
        "attributes_processed": 2,
        "events_processed": 1,
    }


# ------------------------------------------------------------------------------ 75 limit
def test_more_than_75_objects_in_an_array_rejects_the_whole_request(
    braze: FakeBraze, client: httpx.Client
) -> None:
    attrs = [{"external_id": f"u{i}", "x": 1} for i in range(76)]
    response = track(client, attributes=attrs)
    assert response.status_code == 400
    assert response.json()["message"] == "Max Input Length Exceeded"
    assert braze.users == {}
    assert track(client, attributes=attrs[:75]).status_code == 201


def test_75_per_array_is_fine_unless_the_limit_is_combined() -> None:
    body = {
        "attributes": [{"external_id": f"u{i}", "x": 1} for i in range(75)],
        "events": [{"external_id": "u0", "name": "e", "time": "2026-06-30T00:00:00Z"}],
    }
    headers = {"Authorization": f"Bearer {KEY}"}
    with FakeBraze() as legacy, FakeBraze(combined_batch_limit=True) as combined:
        assert (
            httpx.post(f"{legacy.url}/users/track", json=body, headers=headers).status_code == 201
        )
        response = httpx.post(f"{combined.url}/users/track", json=body, headers=headers)
        assert response.status_code == 400
        assert response.json()["message"] == "Max Input Length Exceeded"


# -------------------------------------------------------------------------------- state
def test_attributes_are_set_and_null_removes_them(braze: FakeBraze, client: httpx.Client) -> None:
    track(client, attributes=[{"external_id": "u1", "churn_risk": True, "plan": "pro"}])
    track(client, attributes=[{"external_id": "u1", "plan": None, "reports_30d": 4}])
    assert braze.attributes(external_id="u1") == {"churn_risk": True, "reports_30d": 4}
    assert braze.data_points == 4  # every attribute write is billed, removals included


def test_array_attributes_take_add_and_remove(braze: FakeBraze, client: httpx.Client) -> None:
    track(client, attributes=[{"external_id": "u1", "audiences": ["a", "b"]}])
    track(client, attributes=[{"external_id": "u1", "audiences": {"add": ["c", "a"]}}])
    track(client, attributes=[{"external_id": "u1", "audiences": {"remove": ["b"]}}])
    assert braze.attributes(external_id="u1") == {"audiences": ["a", "c"]}


def test_update_existing_only_does_not_create_profiles(
    braze: FakeBraze, client: httpx.Client
) -> None:
    response = track(
        client, attributes=[{"external_id": "ghost", "_update_existing_only": True, "x": 1}]
    )
    assert response.status_code == 201
    assert braze.attributes(external_id="ghost") is None
    track(client, attributes=[{"external_id": "u1", "x": 1}])
    track(client, attributes=[{"external_id": "u1", "_update_existing_only": True, "x": 2}])
    assert braze.attributes(external_id="u1") == {"x": 2}


def test_email_identifies_the_profile_that_has_it(braze: FakeBraze, client: httpx.Client) -> None:
    track(client, attributes=[{"external_id": "u1", "email": "Ann@Example.com"}])
    track(client, attributes=[{"email": "ann@example.com", "plan": "pro"}])
    assert braze.attributes(external_id="u1") == {"email": "Ann@Example.com", "plan": "pro"}
    assert len(braze.users) == 1
    track(client, attributes=[{"email": "bob@example.com", "plan": "free"}])  # email-only profile
    assert braze.attributes(email="bob@example.com") == {"email": "bob@example.com", "plan": "free"}


def test_events_are_appended_per_user(braze: FakeBraze, client: httpx.Client) -> None:
    events = [
        {
            "external_id": "u1",
            "name": "entered",
            "time": "2026-06-30T00:00:00Z",
            "properties": {"a": 1},
        },
        {"external_id": "u1", "name": "exited", "time": "2026-07-01T00:00:00Z"},
    ]
    assert track(client, events=events).json() == {"message": "success", "events_processed": 2}
    assert braze.events_of(external_id="u1") == [
        {"name": "entered", "time": "2026-06-30T00:00:00Z", "properties": {"a": 1}},
        {"name": "exited", "time": "2026-07-01T00:00:00Z"},
    ]


# ------------------------------------------------------------------------ per-row errors
def test_an_object_without_identifier_fails_alone(braze: FakeBraze, client: httpx.Client) -> None:
    response = track(
        client, attributes=[{"external_id": "u1", "x": 1}, {"x": 2}, {"external_id": "u3", "x": 3}]
    )
    assert response.status_code == 201
    assert response.json() == {
        "message": "success",
        "attributes_processed": 2,
        "errors": [
            {
                "type": "'external_id', 'braze_id', 'user_alias', 'email' or 'phone' is required",
                "input_array": "attributes",
                "index": 1,
            }
        ],
    }
    assert braze.attributes(external_id="u3") == {"x": 3}


def test_two_strong_identifiers_and_bad_emails_are_per_row_errors(client: httpx.Client) -> None:
    response = track(
        client,
        attributes=[
            {"external_id": "u1", "braze_id": "b1", "x": 1},
            {"external_id": "u2", "email": "not-an-email"},
            {"external_id": "u3", "x": 1},
        ],
    )
    errors = response.json()["errors"]
    assert [e["index"] for e in errors] == [0, 1]
    assert errors[1]["type"] == "The value provided for the 'email' field is not a valid email."


def test_when_nothing_is_valid_the_request_fails_with_400(client: httpx.Client) -> None:
    response = track(client, events=[{"external_id": "u1", "time": "2026-06-30T00:00:00Z"}])
    assert response.status_code == 400
    assert response.json() == {
        "message": "Valid data must be provided in the 'attributes', 'events', or 'purchases' fields.",
        "errors": [{"type": "'name' is required", "input_array": "events", "index": 0}],
    }


def test_reject_makes_chosen_rows_fail_until_cleared(
    braze: FakeBraze, client: httpx.Client
) -> None:
    braze.reject(lambda obj: obj.get("external_id") == "u2")
    attrs = [{"external_id": "u1", "x": 1}, {"external_id": "u2", "x": 1}]
    body = track(client, attributes=attrs).json()
    assert body["attributes_processed"] == 1
    assert body["errors"] == [
        {
            "type": "provided external_id is blacklisted and disallowed",
            "input_array": "attributes",
            "index": 1,
        }
    ]
    assert braze.attributes(external_id="u2") is None
    braze.clear_rejections()
    assert "errors" not in track(client, attributes=attrs).json()
    assert braze.attributes(external_id="u2") == {"x": 1}


# ----------------------------------------------------------------------------- rate limit
def test_rate_limit_headers_and_429_without_retry_after() -> None:
    with (
        FakeBraze(rate_limit=2, window_seconds=1.0) as braze,
        httpx.Client(base_url=braze.url, headers={"Authorization": f"Bearer {KEY}"}) as client,
    ):
        answers = [track(client, attributes=[{"external_id": "u1", "n": i}]) for i in range(3)]
        assert [a.status_code for a in answers] == [201, 201, 429]
        assert [a.headers["x-ratelimit-remaining"] for a in answers] == ["1", "0", "0"]
        assert answers[0].headers["x-ratelimit-limit"] == "2"
        reset = int(answers[2].headers["x-ratelimit-reset"])
        assert time.time() <= reset <= time.time() + 2
        assert answers[2].json() == {"message": "Rate Limited"}
        assert "retry-after" not in answers[2].headers
        assert braze.attributes(external_id="u1") == {"n": 1}  # the throttled write was dropped
        assert braze.throttled == 1
        time.sleep(1.05)  # the next window starts afresh
        assert track(client, attributes=[{"external_id": "u1", "n": 3}]).status_code == 201


# ------------------------------------------------------------------------- injected faults
def test_injected_5xx_then_the_fake_recovers(braze: FakeBraze, client: httpx.Client) -> None:
    braze.inject(Fault(status=503, times=2))
    statuses = [
        track(client, attributes=[{"external_id": "u1", "x": 1}]).status_code for _ in range(3)
    ]
    assert statuses == [503, 503, 201]
    assert braze.requests[0].fault == Fault(status=503, times=2)


def test_injected_429_looks_like_brazes(braze: FakeBraze, client: httpx.Client) -> None:
    braze.inject(Fault(status=429, headers={"X-RateLimit-Remaining": "0"}))
    response = track(client, attributes=[{"external_id": "u1", "x": 1}])
    assert response.status_code == 429
    assert response.json() == {"message": "Rate Limited"}
    assert response.headers["x-ratelimit-remaining"] == "0"
    assert "x-ratelimit-reset" in response.headers
    assert braze.throttled == 1
    assert braze.attributes(external_id="u1") is None


def test_a_fault_only_applies_to_its_path(braze: FakeBraze, client: httpx.Client) -> None:
    braze.inject(Fault(status=500, path="/users/delete"))
    assert track(client, attributes=[{"external_id": "u1", "x": 1}]).status_code == 201
    assert client.post("/users/delete", json={}).status_code == 500


def test_a_delay_times_the_client_out_and_the_fake_carries_on(
    braze: FakeBraze, client: httpx.Client
) -> None:
    braze.inject(Fault(delay=0.5))  # no status: answers normally, but too late
    with pytest.raises(httpx.ReadTimeout):
        client.post(
            "/users/track", json={"attributes": [{"external_id": "u1", "x": 1}]}, timeout=0.1
        )
    assert track(client, attributes=[{"external_id": "u2", "x": 1}]).status_code == 201
    # The slow request is still processed server-side, like a real vendor would.
    braze.wait_for_requests(2, timeout=3)
    assert braze.attributes(external_id="u1") == {"x": 1}


def test_stop_does_not_wait_for_a_pending_delay() -> None:
    braze = FakeBraze().start()
    braze.inject(Fault(delay=30))
    with pytest.raises(httpx.TransportError):
        httpx.post(f"{braze.url}/users/track", json={}, timeout=0.2)
    started = time.monotonic()
    braze.stop()
    assert time.monotonic() - started < 2


# ------------------------------------------------------------------------------ transport
def test_keep_alive_connections_are_reused(braze: FakeBraze, client: httpx.Client) -> None:
    for i in range(3):
        track(client, attributes=[{"external_id": f"u{i}", "x": 1}])
    ports = {request.client[1] for request in braze.requests}
    assert len(ports) == 1


def test_gzip_request_bodies_are_decoded(braze: FakeBraze, client: httpx.Client) -> None:
    payload = json.dumps({"attributes": [{"external_id": "u1", "x": 1}]}).encode()
    response = client.post(
        "/users/track",
        content=gzip.compress(payload),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert response.status_code == 201
    assert braze.requests[0].body == {"attributes": [{"external_id": "u1", "x": 1}]}
    assert braze.requests[0].headers["content-encoding"] == "gzip"


def test_requests_are_recorded_with_lowercase_headers_and_status(
    braze: FakeBraze, client: httpx.Client
) -> None:
    track(client, attributes=[{"external_id": "u1", "x": 1}])
    (request,) = braze.wait_for_requests(1)
    assert (request.method, request.path, request.status) == ("POST", "/users/track", 201)
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.response_body["attributes_processed"] == 1


def test_wait_for_requests_times_out(braze: FakeBraze) -> None:
    with pytest.raises(TimeoutError, match="got 0 requests, expected 1"):
        braze.wait_for_requests(1, timeout=0.05)
