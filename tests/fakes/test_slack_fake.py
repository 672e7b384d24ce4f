"""The Slack webhook fake itself, exercised with httpx over real loopback HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.fakes import FakeSlack, Fault


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def test_a_message_is_accepted_with_plain_text_ok(slack: FakeSlack) -> None:
    payload = {
        "text": "2 people entered churn_risk",
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*churn_risk*"}}],
    }
    response = httpx.post(slack.webhook_url, json=payload)
    assert (response.status_code, response.text) == (200, "ok")
    assert slack.messages == [payload]
    assert slack.webhook_url == f"{slack.url}/services/T000/B000/XXXX"


@pytest.mark.parametrize("content", [b"{not json", b"{}", b'{"text": ""}', b"[1, 2]"])
def test_unusable_payloads_are_400_invalid_payload(slack: FakeSlack, content: bytes) -> None:
    response = httpx.post(
        slack.webhook_url, content=content, headers={"Content-Type": "application/json"}
    )
    assert (response.status_code, response.text) == (400, "invalid_payload")
    assert slack.messages == []


def test_malformed_blocks_are_400_invalid_blocks(slack: FakeSlack) -> None:
    response = httpx.post(slack.webhook_url, json={"text": "x", "blocks": [{"text": "no type"}]})
    assert (response.status_code, response.text) == (400, "invalid_blocks")


def test_form_encoded_payload_is_accepted(slack: FakeSlack) -> None:
    response = httpx.post(slack.webhook_url, data={"payload": json.dumps({"text": "hi"})})
    assert response.text == "ok"
    assert slack.messages == [{"text": "hi"}]


def test_an_unknown_webhook_is_404_as_the_reference_says(slack: FakeSlack) -> None:
    response = httpx.post(f"{slack.url}/services/T000/B000/WRONG", json={"text": "x"})
    assert (response.status_code, response.text) == (404, "channel_not_found")
    with FakeSlack(unknown_webhook_error="no_service") as other:
        assert httpx.post(f"{other.url}/services/nope", json={"text": "x"}).text == "no_service"


def test_posting_faster_than_the_rate_is_429_with_retry_after() -> None:
    with FakeSlack(rate_limit=1.0) as slack:
        first = httpx.post(slack.webhook_url, json={"text": "one"})
        second = httpx.post(slack.webhook_url, json={"text": "two"})
    assert first.status_code == 200
    assert (second.status_code, second.headers["retry-after"]) == (429, "1")
    assert slack.messages == [{"text": "one"}]
    assert slack.throttled == 1


def test_injected_faults_use_slacks_bodies(slack: FakeSlack) -> None:
    slack.inject(
        Fault(status=500),
        Fault(status=429),
        Fault(status=410, body="channel_is_archived"),
    )
    answers = [httpx.post(slack.webhook_url, json={"text": "x"}) for _ in range(4)]
    assert [(a.status_code, a.text) for a in answers] == [
        (500, "rollup_error"),
        (429, "rate_limited"),
        (410, "channel_is_archived"),
        (200, "ok"),
    ]
    assert answers[1].headers["retry-after"] == "1"
    assert slack.messages == [{"text": "x"}]


def test_a_delay_times_the_client_out(slack: FakeSlack) -> None:
    slack.inject(Fault(delay=1.0, status=200, body="ok"))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(slack.webhook_url, json={"text": "x"}, timeout=0.2)


def test_keep_alive_connections_are_reused(slack: FakeSlack) -> None:
    with httpx.Client() as client:
        for i in range(3):
            assert client.post(slack.webhook_url, json={"text": str(i)}).text == "ok"
    assert len({request.client[1] for request in slack.requests}) == 1
    assert [m["text"] for m in slack.messages] == ["0", "1", "2"]
