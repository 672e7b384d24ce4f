"""The HTTP layer every destination shares: retries with backoff and jitter, rate limits
from the vendor's headers, and a concurrency limit per destination.

Each destination gets its own ``HttpClient`` (its own connection pool, limiter and retry
budget), so one slow or failing destination never holds another's requests.
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from cdp_warehouse.sync.changes import RetriableError

RETRIABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6  # for 5xx and network errors; 429s wait instead and count apart
    backoff: float = 0.5  # first delay ceiling in seconds, doubled each attempt (full jitter)
    max_backoff: float = 30.0
    max_rate_limit_wait: float = 600.0  # total seconds one request may spend waiting on 429s
    timeout: float = 30.0


class HttpClient:
    """httpx with the retry and rate-limit rules of spec section 6.

    ``request`` returns the final response: a success, or an error the caller must read
    (4xx other than 408/429: per-row or fatal, the destination decides). It raises
    ``RetriableError`` when 5xx/timeouts outlast the retry budget.
    """

    def __init__(self, base_url: str, headers: dict[str, str] | None = None, *, concurrency: int = 4,
                 policy: RetryPolicy | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.policy = policy or RetryPolicy()
        self.concurrency = concurrency
        self._client = httpx.Client(
            base_url=base_url, headers=headers or {}, timeout=self.policy.timeout,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency))
        self._slots = threading.BoundedSemaphore(concurrency)
        self._lock = threading.Lock()
        self._not_before = 0.0  # monotonic instant before which no request is sent
        self._sleep = sleep
        self.requests = 0  # requests sent, retries included
        self.throttled = 0  # 429s received

    def request(self, method: str, url: str, *, retry: bool = True, **kwargs: Any) -> httpx.Response:
        """``retry=False`` for a call that must not be repeated blindly (one that creates
        something): a 5xx or timeout then raises at once; a 429 is still waited out (the
        vendor did not process it)."""
        attempts = self.policy.attempts if retry else 1
        attempt, waited = 0, 0.0
        while True:
            self._wait_for_window()
            try:
                with self._slots:
                    self._count()
                    response = self._client.request(method, url, **kwargs)
            except (httpx.TimeoutException, httpx.TransportError) as error:
                attempt += 1
                if attempt >= attempts:
                    raise RetriableError(f"{method} {url}: {type(error).__name__} after {attempt} attempts",
                                         hint="the rows stay pending and are sent on the next run") from error
                self._sleep(self._backoff(attempt))
                continue
            self._note_limits(response)
            if response.status_code == 429:
                with self._lock:
                    self.throttled += 1
                delay = _retry_after(response) or self._backoff(1)
                waited += delay
                if waited > self.policy.max_rate_limit_wait:
                    raise RetriableError(f"{method} {url}: still rate limited after {waited:.0f} s",
                                         hint="lower the sync's concurrency, or run it again later")
                self._hold(delay)
                continue
            if response.status_code in RETRIABLE_STATUS:
                attempt += 1
                if attempt >= attempts:
                    raise RetriableError(f"{method} {url}: HTTP {response.status_code} after {attempt} attempts",
                                         hint="the rows stay pending and are sent on the next run")
                self._sleep(_retry_after(response) or self._backoff(attempt))
                continue
            return response

    def close(self) -> None:
        self._client.close()

    def _count(self) -> None:
        with self._lock:
            self.requests += 1

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.policy.max_backoff, self.policy.backoff * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)

    def _hold(self, delay: float) -> None:
        """Every thread of this destination waits: a 429 is about the whole key's budget."""
        with self._lock:
            self._not_before = max(self._not_before, time.monotonic() + delay)

    def _wait_for_window(self) -> None:
        while (delay := self._not_before - time.monotonic()) > 0:
            self._sleep(delay)

    def _note_limits(self, response: httpx.Response) -> None:
        """When the vendor says the window is used up, wait for its reset instead of
        collecting 429s (Braze and Intercom send these headers on every response)."""
        remaining = response.headers.get("x-ratelimit-remaining")
        if remaining is not None and remaining.strip() == "0" and response.status_code != 429:
            delay = _reset_delay(response.headers.get("x-ratelimit-reset"))
            if delay:
                self._hold(delay)


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or an HTTP date), else
    ``X-RateLimit-Reset`` (epoch seconds, or seconds from now when small)."""
    value = response.headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(value)
            if parsed is not None:
                return max(0.0, parsed.timestamp() - time.time())
    return _reset_delay(response.headers.get("x-ratelimit-reset"))


def _reset_delay(value: str | None) -> float | None:
    if not value:
        return None
    try:
        reset = float(value)
    except ValueError:
        return None
    # Epoch seconds are rounded to whole seconds by vendors: add a little so the new window
    # has really opened.
    delay = reset - time.time() + 0.05 if reset > 1_000_000_000 else reset
    return max(0.05, min(delay, 3600.0))
