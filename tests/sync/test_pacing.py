"""Pacing in the HTTP layer: requests spread over the vendor's rate-limit window, learned
from X-RateLimit-Limit / -Remaining / -Reset, instead of a burst until Remaining hits 0 and a
wait for a reset rounded to whole seconds.

The first tests drive ``_Pacer`` on a simulated clock against the two kinds of fixed windows
vendors run (one that opens with the first request after the last one ended, as the Braze
fake does, and one aligned on the clock, as Intercom's); the others go over real HTTP to the
fakes in tests/fakes and assert on what the fakes recorded.
"""

from __future__ import annotations

import heapq
import math
import random
import threading
import time
from collections import Counter

import pytest

from cdp_warehouse.sync.http import PACE_MARGIN, HttpClient, _Pacer
from tests.fakes import FakeBraze, FakeSlack
from tests.fakes.intercom import FakeIntercom

WALL0 = 1_800_000_000.37  # the simulated wall clock at monotonic 0 (not on a whole second)


class SimulatedVendor:
    """A fixed-window rate limiter on a simulated clock, answering like Braze or Intercom.

    ``aligned``: windows on the clock (Intercom: 10 s windows ending on multiples of 10);
    else a window opens with the first request after the last one ended (the Braze fake).
    ``relative``: X-RateLimit-Reset in seconds from now (rounded up) instead of epoch seconds.
    """

    def __init__(self, limit: int, window: float, *, aligned: bool = False, relative: bool = False,
                 skew: float = 0.0) -> None:
        self.limit, self.window, self.aligned, self.relative, self.skew = limit, window, aligned, relative, skew
        self.end = -math.inf  # monotonic end of the current window
        self.count = 0
        self.accepted: Counter[float] = Counter()  # accepted requests by window end
        self.throttled = 0

    def answer(self, t: float) -> tuple[int, float, float, float]:
        """(status, limit, remaining, reset) for a request received at monotonic ``t``."""
        if t >= self.end:
            if self.aligned:
                wall = WALL0 + t
                self.end = (math.floor(wall / self.window) + 1) * self.window - WALL0
            else:
                self.end = t + self.window
            self.count = 0
        self.count += 1
        ok = self.count <= self.limit
        if ok:
            self.accepted[self.end] += 1
        else:
            self.throttled += 1
        end_wall = WALL0 + self.end + self.skew  # the vendor's clock may differ from ours
        reset = math.ceil(self.end - t) if self.relative else math.ceil(end_wall)
        return (200 if ok else 429), float(self.limit), float(max(self.limit - self.count, 0)), float(reset)

    def full_windows(self) -> list[int]:
        """Accepted per window, in order, without the first and the last (partial) ones."""
        return [self.accepted[end] for end in sorted(self.accepted)][1:-1]


class Simulation:
    """``threads`` senders sharing one pacer, on a simulated clock: each takes a slot, sends at
    the slot, gets the answer ``latency`` later (the vendor counts it half way) and tells the
    pacer. A 429 holds that sender until the reset header (HttpClient holds them all).
    ``other_client``: another client spends that share of the same budget (one request for
    every 1/share of ours)."""

    def __init__(self, vendor: SimulatedVendor, *, threads: int = 4, latency: float = 0.004, jitter: float = 0.0,
                 other_client: float = 0.0) -> None:
        self.vendor, self.threads, self.latency, self.other_client = vendor, threads, latency, other_client
        self.jitter = jitter  # each way takes latency / 2 * (1 + up to this share more), at random
        self.random = random.Random(7)
        self.now = 0.0
        self.pacer = _Pacer(threads, wall=lambda: WALL0 + self.now)

    def run(self, requests: int) -> _Pacer:
        vendor, pacer = self.vendor, self.pacer
        events: list[tuple[float, int, str, tuple]] = [(self.now, i, "ready", ()) for i in range(self.threads)]
        sent = answered = 0
        while events and answered < requests:
            t, thread, what, data = heapq.heappop(events)
            self.now = t
            if what == "ready":
                if sent < requests:
                    at, ticket = pacer.reserve(t)
                    sent += 1
                    heapq.heappush(events, (at + self.way(), thread, "arrive", (ticket, at)))
            elif what == "arrive":
                ticket, at = data
                if self.other_client and ticket % round(1 / self.other_client) == 0:
                    vendor.answer(t)  # someone else spends the same budget
                heapq.heappush(events, (t + self.way(), thread, "answer", (ticket, at, vendor.answer(t))))
            else:
                ticket, at, (status, limit, remaining, reset) = data
                pacer.observe(limit, remaining, reset, ticket, at, t)
                answered += status != 429
                if status == 429:
                    pacer.throttled()
                    sent -= 1  # sent again after the hold
                    wait = reset if vendor.relative else reset - (WALL0 + t) + 0.05
                    heapq.heappush(events, (t + max(wait, 0.05), thread, "ready", ()))
                else:
                    heapq.heappush(events, (t, thread, "ready", ()))
        return pacer

    def way(self) -> float:
        return self.latency / 2 * (1 + self.jitter * self.random.random())


def simulate(vendor: SimulatedVendor, requests: int, **options) -> _Pacer:
    return Simulation(vendor, **options).run(requests)


@pytest.mark.parametrize("aligned", [False, True], ids=["window-opens-on-first-request", "clock-aligned-window"])
@pytest.mark.parametrize("window", [1.0, 3.0, 10.0])
def test_the_pacer_learns_the_window_and_fills_it_without_a_429(aligned, window):
    limit = 300
    vendor = SimulatedVendor(limit, window, aligned=aligned)
    pacer = simulate(vendor, requests=limit * 12)
    assert vendor.throttled == 0
    assert pacer.window == pytest.approx(window, rel=0.01)  # measured, not the whole-second header
    full = vendor.full_windows()
    assert len(full) >= 9
    # every window after the first two (the first is paced from the header alone) is ~97% full
    assert all(n >= limit * (1 - PACE_MARGIN) - 2 for n in full[1:]), full
    assert all(n <= limit for n in full)


def test_without_pacing_knowledge_the_first_window_is_spread_up_to_the_header_reset():
    vendor = SimulatedVendor(100, 1.0)
    simulate(vendor, requests=100)
    first = vendor.accepted[min(vendor.accepted)]
    assert vendor.throttled == 0
    assert 45 <= first <= 100  # 100 requests over (1 s + the rounding of the reset header)


def test_reset_headers_in_seconds_from_now_are_learned_too():
    vendor = SimulatedVendor(200, 2.0, relative=True)  # X-RateLimit-Reset: 2, 1, ... (rounded up)
    pacer = simulate(vendor, requests=200 * 10)
    assert vendor.throttled == 0
    assert pacer.window == pytest.approx(2.0, rel=0.02)
    assert all(n >= 200 * (1 - PACE_MARGIN) - 2 for n in vendor.full_windows()[2:])


def test_windows_shorter_than_the_headers_second_are_told_apart_by_remaining():
    vendor = SimulatedVendor(200, 0.5)  # two windows may end in the same whole second
    pacer = simulate(vendor, requests=200 * 16)
    assert vendor.throttled == 0
    assert pacer.window == pytest.approx(0.5, rel=0.02)
    assert all(n >= 200 * (1 - PACE_MARGIN) - 2 for n in vendor.full_windows()[3:])


def test_far_away_vendors_with_uneven_round_trips_are_learned_too():
    # 80-160 ms round trips: 4 threads can send ~33 requests/s, the limit is 20/s (60 per 3 s)
    vendor = SimulatedVendor(60, 3.0)
    pacer = simulate(vendor, requests=60 * 12, latency=0.08, jitter=1.0)
    assert vendor.throttled == 0
    # the vendor's next window opens with our first request after one ended: a period is a
    # window plus that gap, up to a spacing (50 ms) here
    assert pacer.window == pytest.approx(3.03, abs=0.05)
    full = vendor.full_windows()[2:]
    assert sum(full) >= 0.9 * 60 * len(full) and min(full) >= 0.8 * 60, vendor.full_windows()


@pytest.mark.parametrize("skew", [-0.3, 0.3])
def test_a_vendor_clock_a_little_off_does_not_change_what_is_learned(skew):
    vendor = SimulatedVendor(300, 3.0, skew=skew)  # its reset header is off by that much on our clock
    pacer = simulate(vendor, requests=300 * 8)
    assert vendor.throttled == 0
    assert pacer.window == pytest.approx(3.0, rel=0.01)
    assert all(n >= 300 * (1 - PACE_MARGIN) - 2 for n in vendor.full_windows()[1:])


def test_a_budget_shared_with_another_client_is_spread_over_what_is_left():
    # another client spends a sixth of the key's budget: we slow down instead of running dry
    vendor = SimulatedVendor(300, 3.0)
    pacer = simulate(vendor, requests=300 * 8, other_client=0.2)
    full = vendor.full_windows()
    assert all(n >= 300 * 0.95 for n in full), full  # the key's budget is used
    # a 429 now and then: what the other client took between an answer and our next request
    assert vendor.throttled <= 2 * (len(full) + 2)
    assert pacer.window == pytest.approx(3.0, rel=0.01)


def test_a_429_drops_the_learned_window_and_it_is_measured_again():
    vendor = SimulatedVendor(300, 3.0)
    simulation = Simulation(vendor)
    pacer = simulation.run(300 * 4)
    assert pacer.window == pytest.approx(3.0, rel=0.01)
    pacer.throttled()
    assert pacer.window is None
    simulation.run(300 * 4)  # spread up to the reset header meanwhile, then measured again
    assert pacer.window == pytest.approx(3.0, rel=0.01) and vendor.throttled == 0


def test_long_windows_are_not_spread_but_their_budget_is_kept():
    """An hourly or daily limit: spreading it would make a small job crawl, so requests go at
    once, up to what the window has left; then they wait for its reset."""
    now = 100.0
    pacer = _Pacer(4, wall=lambda: WALL0 + now)
    pacer.observe(5000, 4999, math.ceil(WALL0 + now + 1800), 0, now - 0.01, now)  # half an hour left
    assert [pacer.reserve(now)[0] for _ in range(100)] == [now] * 100
    pacer.observe(5000, 2, math.ceil(WALL0 + now + 1800), 100, now - 0.01, now)  # someone else spent it
    assert pacer.reserve(now)[0] == now and pacer.reserve(now)[0] == now
    assert pacer.reserve(now)[0] == pytest.approx(now + 1800, abs=1.1)


def test_answers_without_rate_limit_headers_leave_requests_unpaced():
    """Slack says only Retry-After on a 429 (Salesforce sends a daily Sforce-Limit-Info):
    nothing to pace from."""
    with FakeSlack() as slack:
        client = HttpClient(slack.url, concurrency=1)
        for i in range(5):
            assert client.request("POST", "/services/T000/B000/XXXX", json={"text": f"m{i}"}).text == "ok"
        assert client.pacer.limit is None and client.pacer.spacing(time.monotonic()) == 0.0


# ---------------------------------------------------------------------------- over real HTTP


class RecordingBraze(FakeBraze):
    """The Braze fake, also noting when each request arrived and the window it was counted in."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.arrivals: list[tuple[float, float, bool]] = []  # (monotonic, window end, allowed)

    def _take_rate_slot(self) -> bool:
        with self._lock:
            allowed = super()._take_rate_slot()
            self.arrivals.append((time.monotonic(), self._window_end, allowed))
            return allowed


class RecordingIntercom(FakeIntercom):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.arrivals: list[tuple[float, float, bool]] = []

    def _take_rate_slot(self) -> bool:
        with self._lock:
            allowed = super()._take_rate_slot()
            self.arrivals.append((time.monotonic(), self._window_end, allowed))
            return allowed


def hammer(client: HttpClient, call, threads: int, requests: int) -> None:
    """``requests`` calls from ``threads`` threads sharing one client, as the engine's senders do."""
    def work(n: int) -> None:
        for _ in range(n):
            call(client)

    workers = [threading.Thread(target=work, args=(requests // threads,)) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def windows(arrivals: list[tuple[float, float, bool]]) -> list[tuple[int, float]]:
    """(accepted requests, seconds from its first to its last arrival) per fake window, in order."""
    by_end: dict[float, list[float]] = {}
    for at, end, allowed in arrivals:
        if allowed:
            by_end.setdefault(end, []).append(at)
    return [(len(times), times[-1] - times[0]) for _, times in sorted(by_end.items())]


# How full the windows get depends on how fast this machine sends (CI runs other work
# beside): that is benchmarks/sync.py's figure. These tests check what pacing guarantees
# whatever the speed: no 429, never more than the limit in a window, requests spread over
# the window instead of burst at its start, and the window's length learned.


def test_a_paced_client_spreads_braze_windows_with_no_429():
    limit = 100
    with RecordingBraze(rate_limit=limit, window_seconds=1.0) as braze:
        client = HttpClient(braze.url, {"Authorization": f"Bearer {braze.api_key}"}, concurrency=4)
        body = {"attributes": [{"external_id": "u1", "plan": "pro"}]}
        hammer(client, lambda c: c.request("POST", "/users/track", json=body), threads=4, requests=4 * 100)
    assert braze.throttled == 0 and client.throttled == 0
    per_window = windows(braze.arrivals)
    assert all(n <= limit for n, _ in per_window)
    # the windows after the first two (the first is spread up to the whole-second reset):
    # spread over the window rather than burst at its start
    steady = per_window[2:-1]
    assert steady, per_window
    assert all(span >= 0.8 for _, span in steady), per_window
    assert client.pacer.window == pytest.approx(1.0, rel=0.1)


def test_a_paced_client_keeps_intercoms_clock_aligned_windows_with_no_429():
    limit = 100
    with RecordingIntercom(rate_limit=limit, window_seconds=1.0, validate=False) as intercom:
        client = HttpClient(intercom.url, {"Authorization": f"Bearer {intercom.token}", "Intercom-Version": "2.14"},
                            concurrency=4)
        hammer(client, lambda c: c.request("GET", "/tags"), threads=4, requests=4 * 90)
    assert intercom.throttled == 0 and client.throttled == 0
    per_window = windows(intercom.arrivals)
    assert all(n <= limit for n, _ in per_window)
    assert per_window[2:-1], per_window
    assert client.pacer.window == pytest.approx(1.0, rel=0.1)


def test_unpaced_the_client_still_waits_for_the_reset_when_remaining_is_0():
    """``pace=False``: the previous behaviour, a burst until Remaining: 0 and a hold until the
    reset; still no 429, but the windows fill at their start and then sit idle."""
    with RecordingBraze(rate_limit=20, window_seconds=1.0) as braze:
        client = HttpClient(braze.url, {"Authorization": f"Bearer {braze.api_key}"}, concurrency=1, pace=False)
        body = {"attributes": [{"external_id": "u1", "plan": "pro"}]}
        for _ in range(50):
            assert client.request("POST", "/users/track", json=body).status_code == 201
    assert braze.throttled == 0 and client.pacer is None
    per_window = windows(braze.arrivals)
    assert [n for n, _ in per_window] == [20, 20, 10]
    assert all(span < 0.8 for _, span in per_window[:2])  # a burst, then the wait for the reset
