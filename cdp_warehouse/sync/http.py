"""The HTTP layer every destination shares: retries with backoff and jitter, rate limits
from the vendor's headers, and a concurrency limit per destination.

Each destination gets its own ``HttpClient`` (its own connection pool, limiter and retry
budget), so one slow or failing destination never holds another's requests.

Pacing. Vendors that announce a fixed-window limit on every answer (Braze, Intercom:
``X-RateLimit-Limit``, ``-Remaining``, ``-Reset``) get requests spread evenly over the
window instead of a burst until ``Remaining`` reaches 0 and a wait for a reset that is
rounded to whole seconds (that wait cost a quarter of a 3-second window). ``_Pacer``
learns the window's length from the answers themselves (measured on our own monotonic
clock: the instant the vendor's reset value changes, seen with traffic on both sides, is
where one window ends and the next begins), counts the budget a window has left for us
(``Remaining`` less what we sent since), and lets requests through at
``limit * (1 - PACE_MARGIN) / window``, never more than the budget. Vendors without these
headers (Salesforce's daily ``Sforce-Limit-Info``, Slack's ``Retry-After``) are not paced.
"""

from __future__ import annotations

import email.utils
import math
import random
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from cdp_warehouse.sync.changes import RetriableError

RETRIABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})

# Pacing (see the module docstring and ``_Pacer``).
PACE_MARGIN = 0.03  # send at most 97% of the limit: room for an error in the learned window end
TIGHT = 0.1  # s: a window change seen within this long of our last request counted before it is measured
RESET_GUARD = 0.05  # s past an X-RateLimit-Reset (whole seconds) before the window is taken as open
EDGE_GUARD = 0.005  # s past a window end we measured ourselves
CATCH_UP = 0.1  # s of slots that requests which came late may use at once (threads wake late)
PACE_HORIZON = 60.0  # s: longer windows (hourly, daily limits) are not spread, only their budget kept
MAX_RESET_WAIT = 3600.0  # s: a reset further away than this is taken as this far


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
                 policy: RetryPolicy | None = None, sleep: Callable[[float], None] = time.sleep,
                 pace: bool = True) -> None:
        """``pace=False`` turns pacing off: requests then go as fast as ``concurrency``
        allows until ``X-RateLimit-Remaining: 0``, and wait for ``X-RateLimit-Reset``."""
        self.policy = policy or RetryPolicy()
        self.concurrency = concurrency
        self._client = httpx.Client(
            base_url=base_url, headers=headers or {}, timeout=self.policy.timeout,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency))
        self._slots = threading.BoundedSemaphore(concurrency)
        self._lock = threading.Lock()
        self._not_before = 0.0  # monotonic instant before which no request is sent
        self._sleep = sleep
        self.pacer = _Pacer(concurrency) if pace else None  # one for all threads of this destination
        self.requests = 0  # requests sent, retries included
        self.throttled = 0  # 429s received

    def request(self, method: str, url: str, *, retry: bool = True, **kwargs: Any) -> httpx.Response:
        """``retry=False`` for a call that must not be repeated blindly (one that creates
        something): a 5xx or timeout then raises at once; a 429 is still waited out (the
        vendor did not process it)."""
        attempts = self.policy.attempts if retry else 1
        attempt, waited = 0, 0.0
        while True:
            ticket = self._wait_turn()
            try:
                with self._slots:
                    self._count()
                    sent = time.monotonic()
                    response = self._client.request(method, url, **kwargs)
            except (httpx.TimeoutException, httpx.TransportError) as error:
                attempt += 1
                if attempt >= attempts:
                    raise RetriableError(f"{method} {url}: {type(error).__name__} after {attempt} attempts",
                                         hint="the rows stay pending and are sent on the next run") from error
                self._sleep(self._backoff(attempt))
                continue
            self._note_limits(response, ticket, sent)
            if response.status_code == 429:
                with self._lock:
                    self.throttled += 1
                    if self.pacer is not None:
                        self.pacer.throttled()
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

    def _wait_turn(self) -> int:
        """Wait until this request may go: past any hold, then until the slot the pacer
        gives it (each request its own slot, so waiting threads do not wake together).
        Returns the request's sequence number (the pacer counts what it let through)."""
        while True:
            with self._lock:
                now = time.monotonic()
                hold = self._not_before - now
                if hold <= 0:
                    if self.pacer is None:
                        return 0
                    at, ticket = self.pacer.reserve(now)
            if hold > 0:
                self._sleep(hold)
                continue
            if at > now:
                self._sleep(at - now)
                if self._not_before > time.monotonic():  # a 429 came in meanwhile: its hold first
                    continue
            return ticket

    def _note_limits(self, response: httpx.Response, ticket: int, sent: float) -> None:
        """Learn the vendor's window from the answer (Braze and Intercom send these headers
        on every response). Unpaced: when the vendor says the window is used up, wait for
        its reset instead of collecting 429s."""
        if self.pacer is not None:
            limit = remaining = reset = None
            for name, value in response.headers.raw:  # one pass: Headers.get scans them all each time
                if len(name) > 12 and name[:12].lower() == b"x-ratelimit-":
                    kind = name[12:].lower()
                    if kind == b"limit":
                        limit = _number(value)
                    elif kind == b"remaining":
                        remaining = _number(value)
                    elif kind == b"reset":
                        reset = _number(value)
            if remaining is not None and reset is not None:
                with self._lock:
                    self.pacer.observe(limit, remaining, reset, ticket, sent, time.monotonic())
            return
        remaining_text = response.headers.get("x-ratelimit-remaining")
        if remaining_text is not None and remaining_text.strip() == "0" and response.status_code != 429:
            delay = _reset_delay(response.headers.get("x-ratelimit-reset"))
            if delay:
                self._hold(delay)


@dataclass
class _Window:
    """A rate-limit window as the vendor's answers showed it."""

    key: float  # its X-RateLimit-Reset as epoch seconds (a relative one converted)
    epoch: bool  # the header was epoch seconds (exact, comparable between answers)
    opener: int  # sequence number of the request whose answer first showed it
    start: float | None  # monotonic instant it began, when measured (see _Pacer.observe)
    last_sent: float  # latest send instant of a request counted in it
    low: int  # lowest X-RateLimit-Remaining seen in it
    low_ticket: int  # the request that answered it


class _Pacer:
    """Spreads requests over a vendor's fixed rate-limit window. Not thread-safe: the
    ``HttpClient`` calls it under its lock, so every thread of a destination shares it.

    What it knows comes from the answers: the limit (``X-RateLimit-Limit``), which window
    an answer was counted in (a new ``X-RateLimit-Reset`` value, or ``Remaining`` jumping
    back up), and what is left in it (``Remaining``).

    **Window length.** Measured, on our monotonic clock, where one window gives way to the
    next: between the send of our last request counted in the old window and the answer to
    the first one counted in the new. When the two are close (``TIGHT``, and at most
    ``PACE_MARGIN`` of a window) the boundary is the middle; two such boundaries in a row
    give a length (the median of the last five is used). Before that, the step between the
    two (whole-second) reset values is taken when it fits the end the header allows (in
    ``(reset - 1, reset]``) for the measured start. Neither the vendor's clock nor the
    whole-second rounding of its header enter the learned length.

    **Slots.** A prediction of the window requests go into: its end (measured start +
    length, else the reset header + ``RESET_GUARD``) and the budget it has left for us
    (``Remaining`` less the requests let through since the answered one). Requests go at
    most ``limit * (1 - PACE_MARGIN)`` per learned window, spaced evenly; never faster than
    the budget spread over the time left allows (in a window whose length is not known
    yet, that is the whole pacing), and not at all while the budget is used up: the next
    slot is then the window's end. Past a learned end, the next window is predicted with a
    full budget; past a header's end, one request goes every ``RESET_GUARD`` until an answer
    tells more. Windows longer than ``PACE_HORIZON`` (hourly or daily limits) are not spread,
    so that a small job does not crawl; their budget is kept all the same.

    A 429 means the prediction was wrong, or another client spends the same budget: the
    learned length is dropped and measured again (the client holds as before).
    """

    def __init__(self, concurrency: int, wall: Callable[[], float] = time.time) -> None:
        self.concurrency = concurrency
        self._wall = wall  # the clock X-RateLimit-Reset epoch seconds are read against
        self.limit: int | None = None
        self.window: float | None = None  # learned length of a window, seconds
        self.sent = 0  # requests let through (their sequence numbers)
        self._periods: deque[float] = deque(maxlen=5)  # measured window lengths
        self._rtts: deque[float] = deque(maxlen=32)  # round trips of the last answers
        self._seen: _Window | None = None  # the latest window the answers showed
        self._end: float | None = None  # predicted end (monotonic) of the window we send into
        self._budget: int | None = None  # requests that window still allows us
        self._anchored = False  # the prediction comes from answers in `_seen` (not rolled forward)
        self._learned_end = False  # `_end` is a measured start + the learned length (else a header)
        self._next = 0.0  # monotonic instant of the next evenly spaced slot

    def spacing(self, now: float) -> float:
        """Seconds between two requests at ``now`` (0: nothing known, no pacing)."""
        spacing = self.window / (self.limit * (1 - PACE_MARGIN)) if self.window and self.limit else 0.0
        if self._budget is not None and self._budget >= 1 and self._end is not None \
                and now < self._end <= now + PACE_HORIZON:
            spacing = max(spacing, (self._end - now) / self._budget)
        return spacing

    def reserve(self, now: float) -> tuple[float, int]:
        """The slot (monotonic instant) of the next request and its sequence number. Each
        request gets its own slot, counted as used, so waiting threads do not wake together."""
        at = max(now, self._next)
        self._roll(at)
        if self._budget is not None and self._budget < 1 and self._end is not None:
            at = max(at, self._end)  # this window is used up: the next one
            self._roll(at)
        spacing = self.spacing(at)
        # requests that come late may catch up (threads wake late; the budget still bounds a window)
        self._next = max(self._next, at - max(CATCH_UP, self.concurrency * spacing)) + spacing
        if self._budget is not None:
            self._budget -= 1
        self.sent += 1
        return at, self.sent

    def _roll(self, now: float) -> None:
        if self._end is None or now < self._end:
            return
        if self._learned_end and self.window and self.limit:
            self._end += (1 + (now - self._end) // self.window) * self.window  # the next window, as learned
            self._budget = self.limit
        else:  # the header's reset passed: one request at a time until an answer tells more
            self._end, self._budget = now + RESET_GUARD, 1
        self._anchored = False

    def observe(self, limit: float | None, remaining: float, reset: float, ticket: int, sent: float,
                now: float) -> None:
        """Learn from one answer's ``X-RateLimit-Limit``, ``-Remaining`` and ``-Reset`` (epoch
        seconds, or seconds from now when small): ``ticket`` is the request's sequence
        number, ``sent`` and ``now`` when it left and when its answer came (monotonic)."""
        if limit is not None and int(limit) != self.limit:
            if self.limit is not None:  # another limit (another endpoint, another plan): start over
                self._forget()
            self.limit = int(limit)
        left = int(remaining)
        epoch = reset > 1_000_000_000
        wall = self._wall()
        key = reset if epoch else wall + reset
        reset_at = now + min((reset - wall if epoch else reset), MAX_RESET_WAIT)  # monotonic
        self._rtts.append(now - sent)
        seen = self._seen
        if seen is not None and ticket < seen.opener:
            return  # an answer from before the current window began (or racing its start)
        # Within a window Remaining only goes down, as our requests are counted (an answer to an
        # earlier request may come later, and a vendor may count requests that arrived since).
        if seen is not None and key <= seen.key + (0.5 if epoch else 1.5) \
                and left <= seen.low + max(0, seen.low_ticket - ticket) + 2 * self.concurrency:
            # the same window
            seen.last_sent = max(seen.last_sent, sent)
            if left < seen.low:
                seen.low, seen.low_ticket = left, ticket
            budget = left - (self.sent - ticket)
            if self._anchored:
                self._budget = min(self._budget, budget) if self._budget is not None else budget
            elif not self._learned_end:  # past the header's reset, the vendor still counts in it
                self._end, self._budget, self._anchored = max(reset_at, now) + RESET_GUARD, budget, True
            return
        # A new window: it began after the vendor counted our last request in the old one,
        # and before it counted this one. One way of a round trip is about half the shortest.
        start = None
        half = min(self._rtts) / 2
        lo, hi = (seen.last_sent + half, now - half) if seen is not None else (0.0, 0.0)
        if seen is not None and hi - lo <= min(TIGHT, PACE_MARGIN * (self.window or reset_at - now)):
            start = (lo + hi) / 2
            if seen.start is not None and TIGHT < start - seen.start <= PACE_HORIZON:
                self._periods.append(start - seen.start)
                self.window = statistics.median(self._periods)
            elif self.window is None and epoch and seen.epoch:
                step = key - seen.key  # whole seconds
                if reset_at - 1 - hi < step <= reset_at - lo and step <= PACE_HORIZON:
                    self.window = step
        self._seen = _Window(key, epoch, ticket, start, sent, left, ticket)
        self._learned_end = start is not None and self.window is not None
        self._end = start + self.window + EDGE_GUARD if self._learned_end else reset_at + RESET_GUARD
        self._budget = left - (self.sent - ticket)
        self._anchored = True

    def throttled(self) -> None:
        """A 429: what was learned did not hold (or someone else spends the budget)."""
        self.window = None
        self._periods.clear()
        self._learned_end = False
        if self._seen is not None:
            self._seen.start = None

    def _forget(self) -> None:
        self.limit = self.window = self._seen = self._end = self._budget = None
        self._periods.clear()
        self._anchored = self._learned_end = False


def _number(value: str | bytes | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


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
    return max(0.05, min(delay, MAX_RESET_WAIT))
