"""The shared HTTP layer: backoff, Retry-After / X-RateLimit-Reset, typed errors."""

from __future__ import annotations

import time

import httpx
import pytest

from cdp_warehouse.sync.changes import RetriableError
from cdp_warehouse.sync.http import HttpClient, RetryPolicy, _retry_after
from tests.fakes import FakeSlack, Fault

FAST = RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.02, timeout=0.5, max_rate_limit_wait=3)


def response(status: int = 429, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers)


def test_wait_comes_from_retry_after_seconds_or_date_else_the_reset_header():
    assert _retry_after(response(**{"Retry-After": "7"})) == 7
    later = time.time() + 30
    http_date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(later))
    assert 28 <= _retry_after(response(**{"Retry-After": http_date})) <= 31
    assert 9 <= _retry_after(response(**{"X-RateLimit-Reset": str(int(time.time()) + 10)})) <= 11  # epoch
    assert _retry_after(response(**{"X-RateLimit-Reset": "4"})) == 4  # seconds from now
    assert _retry_after(response()) is None


def test_server_errors_are_retried_then_reported_as_retriable():
    with FakeSlack() as slack:
        client = HttpClient(slack.url, policy=FAST)
        slack.inject(Fault(status=503, times=2))
        assert client.request("POST", "/services/T000/B000/XXXX", json={"text": "hi"}).text == "ok"
        slack.inject(Fault(status=503, times=5))
        with pytest.raises(RetriableError, match="HTTP 503 after 3 attempts"):
            client.request("POST", "/services/T000/B000/XXXX", json={"text": "hi"})
        assert client.requests == 6


def test_timeouts_are_retried():
    with FakeSlack() as slack:
        client = HttpClient(slack.url, policy=FAST)
        slack.inject(Fault(status=None, delay=1.0))
        assert client.request("POST", "/services/T000/B000/XXXX", json={"text": "hi"}).status_code == 200
        assert client.requests == 2


def test_client_errors_are_returned_for_the_destination_to_read():
    with FakeSlack() as slack:
        client = HttpClient(slack.url, policy=FAST)
        assert client.request("POST", "/services/T000/B000/XXXX", json={}).status_code == 400
        assert client.requests == 1


def test_a_429_holds_every_thread_of_the_destination_until_the_window_opens():
    with FakeSlack() as slack:
        client = HttpClient(slack.url, policy=FAST)
        slack.inject(Fault(status=429, headers={"Retry-After": "1"}))
        started = time.monotonic()
        client.request("POST", "/services/T000/B000/XXXX", json={"text": "a"})
        client.request("POST", "/services/T000/B000/XXXX", json={"text": "b"})
        assert time.monotonic() - started >= 1
        assert (client.requests, client.throttled) == (3, 1)


def test_endless_rate_limiting_gives_up_after_the_budget():
    with FakeSlack() as slack:
        client = HttpClient(slack.url, policy=FAST)
        slack.inject(Fault(status=429, headers={"Retry-After": "1"}, times=10))
        with pytest.raises(RetriableError, match="still rate limited"):
            client.request("POST", "/services/T000/B000/XXXX", json={"text": "a"})


def test_a_call_that_must_not_be_repeated_fails_at_once_but_still_waits_out_429():
    with FakeSlack() as slack:
        client = HttpClient(slack.url, policy=FAST)
        slack.inject(Fault(status=503))
        with pytest.raises(RetriableError, match="after 1 attempts"):
            client.request("POST", "/services/T000/B000/XXXX", json={"text": "a"}, retry=False)
        slack.inject(Fault(status=429, headers={"Retry-After": "1"}))
        assert client.request("POST", "/services/T000/B000/XXXX", json={"text": "b"}, retry=False).text == "ok"
